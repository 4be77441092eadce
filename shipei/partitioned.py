"""Compiling one model for several placements: the partition request from hints and a device map,
and the compiled pipeline (a driver and one program per stage) that `shipei.compile` returns."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .codegen import TARGETS, capabilities, emit
from .codegen.pipeline import GeneratedPipeline, write_pipeline
from .ir.cost import Costs
from .ir.errors import ShipeiError
from .ir.graph import Graph
from .ir.passes.manager import PassContext
from .ir.passes.partition import PartitionRequest
from .ir.pipeline import PipelinePlan, plan_pipeline
from .ir.placement import Placement
from .ir.printer import print_graph
from .ir.profile import Profile
from .runtime.distributed import RayOptions, RayPipelineExecutable
from .runtime.executable import process_folder
from .runtime.pipeline import Pipelined, PipelineExecutable

DeviceMap = Mapping[str, str] | Literal["auto"]


def partition_request(graph: Graph, target: str, device_map: DeviceMap | None,
                      dims: Mapping[str, int], profile: Profile | None = None) -> PartitionRequest | None:
    """What the partition pass chooses among, or None when the model runs on `target` alone (no
    device map, and no hint in the source names another target or a device). Node costs come from
    `profile` where it measured them (`shipei bench --profile`), else from the analytic model."""
    hints = [n.placement for n in graph.nodes if n.placement is not None]
    if device_map is None and all(h.target in (None, target) and h.device is None for h in hints):
        return None
    costs = Costs(profile=profile)
    if device_map == "auto":
        from .runtime.devices import available_placements

        return PartitionRequest(list(available_placements()), _capabilities(), dims=dims, costs=costs)
    mapped = {key: _placement(key, text) for key, text in (device_map or {}).items()}
    wanted = [*mapped.values(), *hints]
    if not (set(mapped) & {"*", ""}):
        wanted.append(Placement(target))  # what no hint places runs on the target
    return PartitionRequest(list(dict.fromkeys(_resolve(p, target) for p in wanted)), _capabilities(), mapped, dims,
                            costs)


def _capabilities() -> dict[str, dict]:
    return {t: capabilities(t) for t in TARGETS}


def _placement(key: str, text: object) -> Placement:
    if not isinstance(key, str) or not isinstance(text, str):
        raise ShipeiError(f"device map entry {key!r}: {text!r} should map a module path to a placement string",
                          hint='e.g. {"h.0": "torch:cuda:0", "*": "jax:cpu"}')
    try:
        return Placement.parse(text)
    except ShipeiError as e:
        raise ShipeiError(f"device map entry '{key}': {e.message}", hint=e.hint) from None


def _resolve(hint: Placement, target: str) -> Placement:
    """A hint as a full placement: the device its target prefers here when it names none (the
    first this machine's probes found), the compile's target when it names none."""
    if hint.full:
        return hint
    if hint.device is not None:
        return Placement(target, hint.device, hint.index)
    from .runtime.devices import available_placements

    preferred = next((p for p in available_placements() if p.target == hint.target), None)
    if preferred is None:
        raise ShipeiError(f"placement '{hint}' names {hint.target}, which has no device here",
                          hint=f"name one: {hint.target}:cpu, or install {hint.target}")
    return preferred


@dataclass
class CompiledPipeline:
    """One model compiled for several placements: the partitioned IR, each stage's program, the
    driver that chains them, and the weights. `load()` runs it with numpy in and out."""

    ir: Graph
    plan: PipelinePlan
    driver: GeneratedPipeline
    weights: dict[str, np.ndarray] = field(repr=False)
    passes: PassContext | None = field(default=None, repr=False)

    @property
    def source(self) -> str:
        """The driver's text."""
        return self.driver.source

    def summary(self, dims: Mapping[str, int] | None = None) -> str:
        """`41/44 nodes torch:cpu, 3 jax:cpu, 3 stages, 2 transfers, 64.0 KiB, zero-copy`."""
        return self.passes.results.partition_report.summary(self.ir, dims)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the driver, each stage's program and weights, and the partitioned IR; returns the
        driver's path (`python <it>` runs the model without shipei)."""
        import safetensors.numpy

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for stage, module in zip(self.plan.stages, self.driver.stages):
            (out / module.filename).write_text(module.source)
            weights = {p.name: np.asarray(self.weights[p.name], order="C") for p in stage.graph.params}
            safetensors.numpy.save_file(weights, str(out / f"{stage.graph.name.lower()}.safetensors"))
        (out / f"{self.ir.name.lower()}.ir").write_text(print_graph(self.ir))
        (out / self.driver.filename).write_text(self.source)
        return out / self.driver.filename

    def load(self, allow_fallback: bool = False, *, check_indices: bool = True, pin: bool = True,
             ray: RayOptions | bool | None = None) -> Pipelined:
        """Each stage on its placement's device, in a worker thread of its own (pinned to a core
        unless `pin=False`), or with `ray` (True, or `RayOptions` to join a cluster) in a Ray actor
        of its own. A device that is absent here is an error unless `allow_fallback`, which runs
        that stage on the CPU with a `DeviceFallbackWarning`."""
        path = self.save(process_folder())
        return load_pipeline(self.ir, self.plan, path, self.weights, allow_fallback, check_indices=check_indices,
                             pin=pin, ray=ray)


def load_pipeline(graph: Graph, plan: PipelinePlan, driver: Path, weights: dict[str, np.ndarray],
                  allow_fallback: bool = False, *, check_indices: bool = True, pin: bool = True,
                  ray: RayOptions | bool | None = None) -> Pipelined:
    """The pipeline whose driver is at `driver`, in this process's threads or, with `ray`, on Ray actors."""
    if ray is None or ray is False:
        return PipelineExecutable(graph, plan, driver, weights, allow_fallback, check_indices=check_indices, pin=pin)
    options = RayOptions() if ray is True else ray
    return RayPipelineExecutable(graph, plan, driver, weights, allow_fallback, check_indices=check_indices,
                                 options=options)


def compile_pipeline(graph: Graph, ctx: PassContext, source: str, options: Mapping[str, Mapping]) -> CompiledPipeline:
    """Each stage of the partitioned `graph` through its target's generator (`options` per target),
    and the driver."""
    plan = plan_pipeline(graph)
    planned = ctx.results.memory_plan is not None
    modules = [emit(s.graph, s.placement.target, source, planned=planned, **dict(options.get(s.placement.target, {})))
               for s in plan.stages]
    return CompiledPipeline(graph, plan, write_pipeline(graph, plan, modules, source), ctx.weights, ctx)
