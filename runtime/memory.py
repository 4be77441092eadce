"""What a compiled model needs in memory at given shape symbols: its weights, its inputs, the
activations of the memory plan (plan-memory) and the workspace its largest op holds, so that a
batch size can be checked against a device before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..ir.errors import ShipeiError, whole_number
from ..ir.graph import Graph
from ..ir.passes.plan_memory import MemoryPlan, plan_memory
from ..ir.passes.rewrite import elements


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model holds at `dims`: weights and inputs as they are, activations as its program
    holds them (`allocation`), and the largest workspace an op needs while it runs.

    How a program holds its activations depends on how it allocates: "planned", the buffers of the
    memory plan, kept (torch at -O3); "eager", each result allocated anew and freed after its last
    reader, none written in place (torch below -O3); "compiled", a compiler's own buffer assignment,
    which reuses and writes in place as the plan does, at exact sizes (XLA for jax and tf, MindSpore's
    graph mode)."""

    dims: dict[str, int]
    weights_bytes: int
    inputs_bytes: int
    activations: MemoryPlan
    allocation: str = "planned"

    @property
    def activations_bytes(self) -> int:
        plan = self.activations
        return {"planned": plan.planned_bytes, "eager": plan.peak_fresh_bytes,
                "compiled": plan.peak_live_bytes}[self.allocation]

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.inputs_bytes + self.activations_bytes + self.activations.workspace_bytes

    def __str__(self) -> str:
        at = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        workspace = self.activations.workspace_bytes
        return (f"memory{' at ' + at if at else ''}: weights {_size(self.weights_bytes)} + inputs "
                f"{_size(self.inputs_bytes)} + activations {_size(self.activations_bytes)} ({self.allocation}; "
                f"naive {_size(self.activations.naive_bytes)})"
                + (f" + workspace {_size(workspace)}" if workspace else "") + f" = {_size(self.total_bytes)}")


def allocation(target: str | None, planned: bool) -> str:
    """How `target`'s program holds its activations (see `MemoryEstimate`); None: as planned."""
    if target is None or planned:
        return "planned"
    from ..codegen import get_target

    return "eager" if get_target(target).free_dead_values else "compiled"


def _target_hooks(graph: Graph, target: str | None, eager: bool) -> dict:
    """`plan_memory`'s view of `target`'s program: the workspace its kernels hold where the
    registry's is not theirs (`Target.workspace`) and, for the eager peak, which alone reads them, the
    results it never holds (`Target.fused_values`) and what its kernels allocate besides
    (`Target.kernel_scratch`)."""
    if target is None:
        return {}
    from ..codegen import get_target

    described = get_target(target)
    if not eager:
        return {"workspace": described.workspace}
    values = described.fused_values
    return {"workspace": described.workspace, "fused": values(graph) if values else frozenset(),
            "scratch": described.kernel_scratch}


def estimate_memory(graph: Graph, dims: Mapping[str, int], target: str | None = None,
                    planned: bool = False) -> MemoryEstimate:
    """The estimate for `graph` with its shape symbols bound to `dims`; every symbol of its inputs
    needs a value. With `target`, activations as that target's program holds them, `planned`
    saying whether it was emitted with the memory plan (-O3); without, the plan's buffers."""
    symbols = graph.symbols()
    unknown = sorted(set(dims) - set(symbols))
    missing = [s for s in symbols if s not in dims]
    if unknown or missing:
        raise ShipeiError(f"{graph.name}: memory estimate needs a value for each shape symbol "
                          f"({', '.join(symbols) or 'none'})"
                          + (f"; unknown {', '.join(unknown)}" if unknown else "")
                          + (f"; missing {', '.join(missing)}" if missing else ""),
                          hint="e.g. estimate_memory(B=8)" if missing else None)
    env = {s: whole_number(dims[s], f"{graph.name}'s {s}") for s in symbols}
    weights = sum(elements(p.type, env) * p.dtype.itemsize for p in graph.params)
    inputs = sum(elements(v.type, env) * v.dtype.itemsize for v in graph.inputs)
    holds = allocation(target, planned)
    hooks = _target_hooks(graph, target, holds == "eager")
    return MemoryEstimate(env, weights, inputs, plan_memory(graph, env, **hooks), holds)


@dataclass(frozen=True)
class TrainingEstimate:
    """Bytes one training step holds at `dims`: the weights, their gradients and the optimizer's
    state (`slots` tensors the size of the trained params: Adam's two moments, SGD's momentum), the
    two flat vectors the generated update works on (params and gradients), the inputs, and the
    activations the backward pass may read: every value the loss graph computes, as an autodiff
    tape keeps them. That last term is an upper bound (a compiler keeps fewer and recomputes some);
    the trials decide."""

    dims: dict[str, int]
    weights_bytes: int
    trained_bytes: int
    slots: int
    inputs_bytes: int
    kept_bytes: int

    @property
    def total_bytes(self) -> int:
        return (self.weights_bytes + self.trained_bytes * (1 + self.slots + 2) + self.inputs_bytes
                + self.kept_bytes)

    def __str__(self) -> str:
        at = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return (f"training memory{' at ' + at if at else ''}: weights {_size(self.weights_bytes)} + gradients "
                f"{_size(self.trained_bytes)} + optimizer state {_size(self.slots * self.trained_bytes)} + update "
                f"vectors {_size(2 * self.trained_bytes)} + inputs {_size(self.inputs_bytes)} + kept activations "
                f"{_size(self.kept_bytes)} = {_size(self.total_bytes)}")


def estimate_training_memory(graph: Graph, dims: Mapping[str, int], slots: int) -> TrainingEstimate:
    """The estimate for one training step of the loss graph `graph` (its params but the buffers
    trained) with an optimizer keeping `slots` state tensors per param."""
    base = estimate_memory(graph, dims)
    env = base.dims
    trained = sum(elements(p.type, env) * p.dtype.itemsize for p in graph.params if not p.param.buffer)
    kept = sum(elements(v.type, env) * v.dtype.itemsize for node in graph.nodes for v in node.results)
    return TrainingEstimate(env, base.weights_bytes, trained, slots, base.inputs_bytes, kept)


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes} B"
