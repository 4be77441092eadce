"""`shipei bench --profile`: each fused group's time on each target, against the cost model's
analytic estimate, saved as a profile (`ir.profile`) that the planner and partitioner use instead.

Per target, the model is compiled as `bench` compiles it, and the optimized graph cut into its
fused groups (a node no pass fused is a group of one; constants cost nothing and are left out).
Each group becomes a standalone program of its own (`ir.region.region_graph`), with its own weights,
fed the values the reference interpreter computes for it. A target's worker calls them with the
framework's own `call` on its own tensors (`Executable.native`), one thread on one core (the cost
model's CPU device), in passes: each pass calls every group once, in the model's order, so that the
caches hold what they would in the whole program. Timed alone and again and again, a layer's weights
stay in the cache and the transformer's groups added up to 0.59 ms against the whole program's 0.83
ms; in passes, to within a few percent. The workers take turns, a round each; a group's time is the
median over all passes.

A program's call costs a fixed part beyond its ops (a framework's dispatch of the whole program:
about 5 us for torch, 0.2 ms for a TensorFlow function); it is measured on a one-op program called
again and again, as a stage is, and taken off each group's time. The planner adds a fixed part once
per stage, where a stage takes numpy or another framework's tensors in and hands its own out: the
profile saves that one, the one-op program called with numpy in and out. The whole program is timed
too, and node times are scaled so that the groups add up to it (`TargetProfile.scale`).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import api
from .bench import Progress
from .ir.cost import Costs, analytic_seconds
from .ir.errors import ShipeiError
from .ir.graph import Graph, Node, Value
from .ir.inputs import random_inputs
from .ir.interpreter import interpret
from .ir.placement import Placement
from .ir.profile import Profile, signature
from .ir.region import Region, region_graph, regions
from .ir.subgraph import extract
from .measuring import CALL_MODEL, REQUEST_TIMEOUT, BenchWorker, Entry, in_turn, thread_env

#: Passes over the groups per round.
PASSES = 10


@dataclass
class Group:
    """A fused group of the optimized graph, as a standalone program with its inputs."""

    nodes: list[Node]
    graph: Graph
    inputs: list[np.ndarray]
    weights: dict[str, np.ndarray]
    node_costs: list[float] = field(default_factory=list)  # each node's analytic seconds
    measured: float | None = None
    error: str = ""

    @property
    def analytic(self) -> float:
        return sum(self.node_costs)

    @property
    def ops(self) -> str:
        return " > ".join(n.op for n in self.nodes)


@dataclass
class TargetProfile:
    """One target's groups, its call's fixed part and the whole program's time, all measured."""

    target: str
    device: str = ""
    groups: list[Group] = field(default_factory=list)
    call: float | None = None
    step: float | None = None
    whole: float | None = None
    error: str = ""

    @property
    def own(self) -> float:
        """The groups' seconds, each less the call's fixed part."""
        return sum(max(g.measured - self.call, 0.0) for g in self.groups if g.measured is not None)

    @property
    def scale(self) -> float:
        """Whole program / the groups (each call's fixed part taken off both): what running the
        groups inside one program adds (torch: attribute look-ups on every line of `forward`) or
        saves (jax: XLA fusing across groups). Node times are scaled by it, so they add up to the
        program."""
        return max(self.whole - self.call, 0.0) / self.own if self.own else 1.0

    def table(self, top: int = 12) -> list[str]:
        """The groups that take longest, analytic against measured, and the sums."""
        if self.error:
            return [f"{self.target}: {self.error}"]
        timed = [g for g in self.groups if g.measured is not None]
        own = {id(g): max(g.measured - self.call, 0.0) for g in timed}
        rows = [f"{self.target} ({self.device}): {len(self.groups)} groups; a call costs {self.call * 1e6:,.1f} us "
                f"beyond its ops ({self.step * 1e6:,.1f} us with numpy in and out); the {min(top, len(timed))} "
                f"longest:",
                "| group | ops | analytic us | measured us | measured / analytic |",
                "|---:|---|---:|---:|---:|"]
        for k, g in sorted(enumerate(timed), key=lambda kg: -own[id(kg[1])])[:top]:
            ratio = own[id(g)] / g.analytic if g.analytic else math.inf
            rows.append(f"| {k} | {_short(g.ops)} | {g.analytic * 1e6:,.1f} | {own[id(g)] * 1e6:,.1f} | {ratio:.2f} |")
        analytic = sum(g.analytic for g in timed)
        rows.append(f"all {len(timed)} groups: analytic {analytic * 1e3:.3f} ms, measured {self.own * 1e3:.3f} ms "
                    f"({self.own / analytic if analytic else math.inf:.2f}x); groups + one call "
                    f"{(self.own + self.call) * 1e3:.3f} ms, the whole program {self.whole * 1e3:.3f} ms: the "
                    f"profile scales node times by {self.scale:.2f} to add up to it")
        rows += [f"group {k} ({_short(g.ops)}) not timed: {g.error}" for k, g in enumerate(self.groups) if g.error]
        return rows


def _short(ops: str, width: int = 48) -> str:
    return ops if len(ops) <= width else ops[:width - 3] + "..."


def groups(graph: Graph, inputs: Sequence[np.ndarray], weights: Mapping[str, np.ndarray]) -> list[Group]:
    """`graph`'s fused groups, in order, as standalone programs, each with the values it reads."""
    parts = [r for r in regions(graph, _group_key) if any(n.operands for n in r.nodes)]
    values = _values(graph, parts, inputs, weights)
    out = []
    for k, region in enumerate(parts):
        part, sources = region_graph(graph, region, f"{graph.name}Group{k}")
        out.append(Group(region.nodes, part, [values[s] for s in sources],
                         {p.name: np.asarray(weights[p.name]) for p in part.params}))
    return out


def _group_key(node: Node) -> object:
    return ("group", node.group) if node.group is not None else ("node", id(node))


def _values(graph: Graph, parts: Sequence[Region], inputs: Sequence[np.ndarray],
            weights: Mapping[str, np.ndarray]) -> dict[Value, np.ndarray]:
    """The arrays of every value a group reads from outside it, by the reference interpreter."""
    given = dict(zip(graph.inputs, inputs))
    needed = list(dict.fromkeys(v for r in parts for v in r.inputs if v.producer is not None))
    if not needed:
        return given
    part, sources = extract(graph, needed)
    return {**given, **dict(zip(needed, interpret(part, [given[s] for s in sources], weights)))}


def profile(graph: Graph, targets: Sequence[str], dims: Mapping[str, int], *, opt: int, seed: int = 0,
            rounds: int = 5, progress: Progress | None = None) -> tuple[list[TargetProfile], Profile]:
    """Each target's groups timed (one thread on one core), and the profile they make."""
    inputs = random_inputs(graph, seed, dict(dims))
    call_graph = api.parse(CALL_MODEL)
    results = [TargetProfile(t) for t in targets]
    progress = progress or Progress(len(targets) * (rounds + 1))
    with tempfile.TemporaryDirectory(prefix="shipei-profile-") as tmp:
        workers, programs = {}, {}
        try:
            for result in results:
                programs[result.target] = _compile(graph, call_graph, result, Path(tmp), inputs, dims, opt, seed)
                if not result.error:
                    log = Path(tmp) / f"{result.target}.log"
                    workers[result.target] = BenchWorker(thread_env(1, result.target), log)
            progress.phase(f"profiling {', '.join(workers) or 'nothing'}: loading every group's program")
            live = []
            for result in results:
                if result.target in workers and _load(result, workers[result.target], programs[result.target]):
                    live.append(result)
                    kind = result.device.split(":")[0]
                    for g in result.groups:
                        g.node_costs = [analytic_seconds(n, Placement(result.target, kind), dims, Costs())
                                        for n in g.nodes]
                progress.step(f"{result.target} loaded")
            samples: dict[str, list[list[float | None]]] = {r.target: [] for r in live}
            for k in range(rounds):
                for result in in_turn(live, k):
                    reply = workers[result.target].request("time", REQUEST_TIMEOUT, passes=PASSES)
                    if "error" in reply:
                        result.error = reply["error"]
                        continue
                    samples[result.target].append(reply["seconds"])
                    progress.step(f"{result.target} round {k + 1}")
                live = [r for r in live if not r.error]
        finally:
            for w in workers.values():
                w.stop()
    progress.close()
    for result in live:
        medians = [statistics.median(s) if all(x is not None for x in s) else None
                   for s in zip(*samples[result.target])]
        result.call, result.step, result.whole = medians[0], medians[1], medians[-1]
        for g, m in zip(result.groups, medians[2:-1]):
            g.measured = m
    return results, _profile(graph.name, dims, [r for r in results if r.call is not None])


def _compile(graph: Graph, call_graph: Graph, result: TargetProfile, directory: Path,
             inputs: Sequence[np.ndarray], dims: Mapping[str, int], opt: int, seed: int) -> list[tuple]:
    """The target's programs to time, saved: the one-op call, each group, the whole model."""
    target, where = result.target, directory / result.target
    try:
        whole = api.compile(graph, target, seed=seed, opt=opt)
    except ShipeiError as e:
        result.error = str(e)
        return []
    result.groups = groups(whole.ir, inputs, whole.weights)
    call = api.compile(call_graph, target, passes=[]).save(where / "call").parent
    one = [np.ones(1, np.float32)]
    programs = [(call, one, "alone"), (call, one, "numpy")]
    for k, g in enumerate(result.groups):
        try:
            compiled = api.compile(g.graph, target, passes=[], weights=g.weights)
        except ShipeiError as e:
            g.error = str(e)
            programs.append((None, [], "passes"))
            continue
        programs.append((compiled.save(where / f"group{k}").parent, g.inputs, "passes"))
    programs.append((whole.save(where / "whole").parent, list(inputs), "passes"))
    return programs


def _load(result: TargetProfile, worker: BenchWorker, programs: list[tuple]) -> bool:
    """Load the target's programs in its worker; False (with `result.error`) when it cannot run."""
    loaded = worker.request("load", REQUEST_TIMEOUT, entry=Entry(result.target, programs[-1][0], 0.0, result.target))
    if "error" in loaded:
        result.error = loaded["error"]
        return False
    result.device = loaded["device"]
    reply = worker.request("programs", REQUEST_TIMEOUT, programs=[
        (d, result.target, result.device.split(":")[0], x, how) for d, x, how in programs if d is not None])
    if "error" in reply:
        result.error = reply["error"]
        return False
    errors = iter(reply["errors"])
    for g, (d, _, _) in zip([None, None, *result.groups, None], programs):
        error = next(errors) if d is not None else ""
        if g is not None and error:
            g.error = error
        elif g is None and error:
            result.error = error
            return False
    return True


def _profile(model: str, dims: Mapping[str, int], results: Sequence[TargetProfile]) -> Profile:
    """Each group's own time (less the call's fixed part), scaled so that the groups add up to the
    whole program (`TargetProfile.scale`), shared among its nodes by analytic cost."""
    out = Profile(model, dict(dims), 1)
    for result in results:
        kind = result.device.split(":")[0]
        placement = f"{result.target}:{kind}"
        out.call[placement] = result.step
        shares: dict[str, list[float]] = {}
        for g in result.groups:
            if g.measured is None:
                continue
            own = max(g.measured - result.call, 0.0) * result.scale
            total = g.analytic
            for node, cost in zip(g.nodes, g.node_costs):
                share = own * cost / total if total else own / len(g.nodes)
                shares.setdefault(signature(node, dims), []).append(share)
        out.nodes[placement] = {k: statistics.mean(v) for k, v in shares.items()}
    return out
