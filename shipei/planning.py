"""`shipei plan`: the pipeline planner (`ir.plan`) on a model at its own shapes, for a cluster
described in a TOML file or for this machine, and a check of its predictions against this
machine's runtime (the plan compiled with its device map and each stage timed alone).

The model is planned as `compile` would run it: after its optimization passes, at one
micro-batch (the batch symbol divided by the micro-batch count). On this machine each core is a
device, as the runtime pins one stage per core.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import api
from .ir.batch import batch_layout
from .ir.cost import Costs
from .ir.errors import ShipeiError
from .ir.graph import Graph
from .ir.inputs import random_inputs
from .ir.passes.manager import DEFAULT_OPT
from .ir.passes.rewrite import clone
from .ir.plan import Cluster, Plan, plan
from .ir.profile import Profile

#: A prediction counts as close when measured / predicted is within this of 1.
CLOSE = 0.25


@dataclass(frozen=True)
class PlannedModel:
    """A plan for a model at a batch of `batch` (its symbol `symbol`), `dims` at one micro-batch."""

    graph: Graph
    plan: Plan
    symbol: str
    batch: int
    dims: dict[str, int]

    @property
    def throughput(self) -> float:
        """Predicted samples per second in the steady state: a batch per `plan.seconds`."""
        return self.batch / self.plan.seconds

    def summary(self) -> str:
        p = self.plan
        slowest = max(s.seconds for s in p.stages)
        return (f"one batch of {self.batch}: {p.seconds * 1e3:.1f} ms predicted (stages' sum "
                f"{sum(s.seconds for s in p.stages) * 1e3:.1f} ms + {p.micro_batches - 1} x the slowest "
                f"{slowest * 1e3:.1f} ms); bubble {p.bubble:.0%}; {self.throughput:,.1f} samples/s")


def this_machine(target: str = "torch") -> Cluster:
    """This machine as the runtime uses it: a device per core this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Cluster.local(cores, target)


def plan_model(graph: Graph, cluster: Cluster, dims: Mapping[str, int], micro_batches: int,
               opt: int = DEFAULT_OPT, profile: Profile | None = None) -> PlannedModel:
    """The pipeline for `graph` after its `-O{opt}` passes, at `dims` (the whole batch) cut into
    `micro_batches`; shape symbols not given are 1. Node and call times come from `profile` where
    it has them (`shipei bench --profile`), else from the analytic cost model."""
    if micro_batches < 1:
        raise ShipeiError(f"--micro-batches must be at least 1, got {micro_batches}")
    optimized = api.optimize(clone(graph), opt)
    layout = batch_layout(optimized, "planning a pipeline")
    full = {s: 1 for v in optimized.inputs for d in v.shape for s in getattr(d, "symbols", ())} | dict(dims)
    batch = full[layout.symbol]
    if batch < micro_batches:
        raise ShipeiError(f"a batch of {layout.symbol}={batch} cannot be cut into {micro_batches} micro-batches",
                          hint=f"pass --dim {layout.symbol}=N with N >= {micro_batches}")
    micro = {**full, layout.symbol: math.ceil(batch / micro_batches)}
    planned = plan(optimized, cluster, micro, micro_batches, costs=Costs(profile=profile))
    return PlannedModel(optimized, planned, layout.symbol, batch, micro)


def coverage(planned: PlannedModel, profile: Profile, cluster: Cluster) -> str:
    """How many of the planned nodes the profile has a measurement for, on the cluster's device kinds."""
    placements = [f"{cluster.targets[k]}:{k}" for k in sorted({k for m in cluster.machines for k in m.devices})]
    ops = [n for n in planned.graph.nodes if n.operands]
    line = []
    for placement in placements:
        covered = sum(profile.seconds(n, placement, planned.dims) is not None for n in ops)
        line.append(f"{placement} {covered} of {len(ops)} nodes")
    at = ", ".join(f"{k}={v}" for k, v in profile.dims.items())
    return (f"profile ({profile.model}{' at ' + at if at else ''}) measures {'; '.join(line)}; "
            f"the cost model estimates the rest")


@dataclass(frozen=True)
class Measured:
    """Each stage's predicted and measured seconds per micro-batch, and one pipelined batch's."""

    stages: list[tuple[float, float]]
    batch: tuple[float, float]

    @property
    def close(self) -> bool:
        """Every stage's prediction within `CLOSE` of its measurement."""
        return all(abs(m / p - 1) <= CLOSE for p, m in self.stages)

    def table(self) -> list[str]:
        rows = ["| stage | predicted ms | measured ms | measured / predicted |", "|---:|---:|---:|---:|"]
        named = [*((str(k), t) for k, t in enumerate(self.stages)), ("batch, pipelined", self.batch)]
        for name, (p, m) in named:
            rows.append(f"| {name} | {p * 1e3:.3f} | {m * 1e3:.3f} | {m / p:.2f} |")
        return rows


def measure(graph: Graph, planned: PlannedModel, seed: int = 0, repeats: int = 15, rounds: int = 5) -> Measured:
    """The plan run here, in this process, as `compile(device_map=plan.device_map()).load()`
    runs it: each stage alone on one micro-batch, the stages taking turns for `rounds` rounds of
    `repeats` calls (the median of all, so that a burst of load on the machine meets every stage),
    and a whole batch pipelined (median of `repeats`)."""
    compiled = api.compile(graph, seed=seed, device_map=planned.plan.device_map())
    stages = compiled.plan.stages
    if [str(s.placement) for s in stages] != [str(s.placement) for s in planned.plan.stages]:
        raise ShipeiError(f"the plan's {len(planned.plan.stages)} stages compiled to {len(stages)}: "
                          f"{', '.join(str(s.placement) for s in stages)}")
    exe = compiled.load()
    try:
        micro = random_inputs(graph, seed, planned.dims)
        seconds = np.median([exe.time_stages(*micro, repeats=repeats) for _ in range(rounds)], axis=0)
        whole = random_inputs(graph, seed, {**planned.dims, planned.symbol: planned.batch})
        exe.run(*whole, micro_batches=planned.plan.micro_batches)  # warm: every micro-batch shape compiled
        batch = []
        for _ in range(repeats):
            start = time.perf_counter()
            exe.run(*whole, micro_batches=planned.plan.micro_batches)
            batch.append(time.perf_counter() - start)
    finally:
        exe.close()
    return Measured([(s.seconds, m) for s, m in zip(planned.plan.stages, seconds)],
                    (planned.plan.seconds, float(np.median(batch))))
