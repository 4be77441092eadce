"""Checking targets against the reference interpreter, and shrinking a failure to a small program.

The oracle is `interpret(precision="f64")`; a target's output passes when it is within the
per-dtype `TOLERANCES` of it, or of the declared-precision reference (each op rounded to its
dtype, as the frameworks compute): both are the spec's numbers, and low-precision chains round
at every op. A failure is a `Failure` record; `assert_lowering_correct` raises it as a
`LoweringMismatch` whose message is a bug report, and the fuzzer saves it.

`minimize` is delta debugging over nodes: it moves the output to the first value that fails,
then replaces the values feeding it by graph inputs holding their reference values (which drops
the nodes that computed them), keeping each step only while the failure persists.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from ..codegen import emit
from ..codegen.frameworks import available_targets
from ..ir.errors import ShipeiError
from ..ir.graph import Graph, Value
from ..ir.init import init_params
from ..ir.interpreter import bind_symbols, interpret, resolve_attrs
from ..ir.registry import get_op
from ..ir.subgraph import cone, extract
from ..ir.tolerance import TOLERANCES, Mismatch, compare
from ..ir.types import DType
from ..ir.verifier import verify
from .strategies import Inputs, make_inputs

#: Generated inputs are redrawn while some intermediate value exceeds its dtype's max / RANGE_MARGIN.
RANGE_MARGIN = 64.0

Arrays = Sequence[np.ndarray]
Weights = dict[str, np.ndarray]


@dataclass
class Reference:
    """The f64 reference: every value of the graph, its outputs, and whether all stay in range."""

    values: dict[Value, np.ndarray]
    outputs: list[np.ndarray]
    problem: str | None = None


def reference(graph: Graph, inputs: Arrays, weights: Weights) -> Reference:
    results = [r for node in graph.nodes for r in node.results]
    extra = [v for v in graph.outputs if v.producer is None]
    probe = Graph(graph.name, graph.inputs, graph.params, graph.nodes, results + extra)
    values = dict(zip(results + extra, interpret(probe, inputs, weights, "f64")))
    outputs = [values[v] for v in graph.outputs]
    values.update(zip(graph.inputs, map(np.asarray, inputs)))
    values.update((p, np.asarray(weights[p.name])) for p in graph.params)
    problem = _range_problem(graph, inputs, values) or _conditioning_problem(graph, inputs, weights, outputs)
    return Reference(values, outputs, problem)


def _conditioning_problem(graph: Graph, inputs: Arrays, weights: Weights, exact: list[np.ndarray]) -> str | None:
    """Why these inputs make the graph ill-conditioned: moving every float op result of the f64
    reference by half an ulp of its dtype, as rounding in a framework may, moves an output beyond
    its tolerance. A mismatch there says nothing about the lowering: it happens where, say, a
    layer norm of nearly equal values follows a 16-bit op, `sin` reads an f32 value near 314
    (half an ulp there moves sin by 1.5e-5), or a layer norm with eps=0 reads a constant row (0/0,
    which rounding turns into NaN or into +-1). (NNSmith-style generators likewise reject
    numerically unstable inputs.) The moves go both ways at random, then alternately along each
    array, which pulls neighbours apart as a norm over them feels most."""
    if not any(r.dtype.is_float for node in graph.nodes for r in node.results):
        return None
    rng = np.random.default_rng(0)
    for signs in (lambda shape: rng.choice([-1.0, 1.0], size=shape),
                  lambda shape: np.where(np.indices(shape).sum(axis=0) % 2 == 0, 1.0, -1.0)):
        nudged = interpret(graph, inputs, weights, "f64", perturb=functools.partial(_nudge, signs))
        for i, (v, a, b) in enumerate(zip(graph.outputs, exact, nudged)):
            if not compare(b, a, tolerance_dtype(v)).ok:
                return f"ill-conditioned: half-ulp changes in float intermediates move output {i} beyond tolerance"
    return None


def _nudge(signs: Callable[[tuple[int, ...]], np.ndarray], value: Value, array: np.ndarray) -> np.ndarray:
    """A float result moved by half an ulp in the direction `signs` gives each element."""
    if not value.dtype.is_float:
        return array
    return array * (1 + float(ml_dtypes.finfo(value.dtype.numpy).eps) / 2 * signs(array.shape))


def _range_problem(graph: Graph, inputs: Arrays, values: dict[Value, np.ndarray]) -> str | None:
    """Why the reference leaves the range targets can follow: a non-finite or near-overflowing
    float, or an integer op that wrapped around (recomputed in float64 it differs)."""
    env = bind_symbols(graph, [np.asarray(a) for a in inputs])
    for node in graph.nodes:
        for r in node.results:
            a = values[r]
            if r.dtype.is_float:
                limit = float(ml_dtypes.finfo(r.dtype.numpy).max) / RANGE_MARGIN
                if not np.isfinite(a).all() or (a.size and np.abs(a).max() > limit):
                    return f"{node.op} gives {r.type} values beyond {limit:.3g}"
            elif r.dtype.is_int and any(v.dtype.is_int for v in node.operands):
                args = [values[v].astype(np.float64) if v.dtype.is_int else values[v] for v in node.operands]
                try:
                    with np.errstate(all="ignore"):
                        wide = get_op(node.op).reference(*args, **resolve_attrs(node.op, node.attrs, env))
                except Exception:  # noqa: BLE001 - ops that need integer operands (indices) cannot wrap
                    continue
                wide = wide[r.index] if isinstance(wide, tuple) else wide
                if not np.array_equal(np.asarray(wide, np.float64), a.astype(np.float64)):
                    return f"{node.op} overflows {r.dtype}"
    return None


def sample_inputs(graph: Graph, seed: int, weights: Weights, tries: int = 4) -> tuple[Inputs, Reference]:
    """Inputs from `make_inputs` whose reference stays in range: the seed, then the next seeds at
    shrinking scale. The last try is returned even when out of range (its `problem` says why)."""
    for k in range(tries):
        inputs = make_inputs(graph, seed + k, scale=3.0 / 2**k)
        ref = reference(graph, inputs, weights)
        if ref.problem is None:
            break
    return inputs, ref


@dataclass
class Failure:
    """How a target failed on a graph: kind is "mismatch", "error", "crash" or "timeout"."""

    target: str
    kind: str
    output: int | None = None
    worst: Mismatch | None = None
    detail: str = ""

    def same(self, other: Failure | None) -> bool:
        """Whether `other` is the same failure, for minimization (errors by exception type)."""
        if other is None or (other.target, other.kind) != (self.target, self.kind):
            return False
        return self.kind != "error" or other.detail.split(":")[0] == self.detail.split(":")[0]

    def describe(self, graph: Graph) -> str:
        if self.kind == "mismatch":
            v = graph.outputs[self.output]
            head = f"target '{self.target}' disagrees with the reference on output {self.output} ({v.type})"
            if self.worst is None:
                return f"{head}: {self.detail}"
            w, dtype = self.worst, tolerance_dtype(v)
            tol = TOLERANCES[dtype]
            return (f"{head}\n  worst element at {list(w.index)}: got {w.actual!r}, expected {w.expected!r}; "
                    f"error {w.error:.3g} > allowed {w.allowed:.3g} ({dtype}: rtol {tol.rtol}, atol {tol.atol})")
        if self.kind == "error":
            return f"target '{self.target}' raised {self.detail}"
        return f"target '{self.target}' {'crashed' if self.kind == 'crash' else 'timed out'}: {self.detail}"


def check_outputs(graph: Graph, outputs: Arrays, ref: Reference, target: str,
                  declared: Callable[[], list[np.ndarray]]) -> Failure | None:
    """The first output outside tolerance of both references, as a Failure; None when all pass."""
    if len(outputs) != len(graph.outputs):
        return Failure(target, "mismatch", 0, None, f"returned {len(outputs)} outputs, expected {len(graph.outputs)}")
    for i, (v, out, expected) in enumerate(zip(graph.outputs, outputs, ref.outputs)):
        out = np.asarray(out)
        if out.shape != expected.shape:
            return Failure(target, "mismatch", i, None, f"shape {list(out.shape)}, expected {list(expected.shape)}")
        dtype = tolerance_dtype(v)
        worst = compare(out, expected, dtype)
        if not worst.ok and not compare(out, declared()[i], dtype).ok:
            return Failure(target, "mismatch", i, worst)
    return None


def tolerance_dtype(value: Value) -> DType:
    """The row of `TOLERANCES` an output is held to: the least precise float dtype computed on the
    way to it (an f64 cast of a bf16 result is only as good as bf16), else its own dtype."""
    floats = {v.dtype for v in cone([value], set()) if v.producer is not None and v.dtype.is_float}
    return max(floats, key=lambda d: TOLERANCES[d].rtol) if value.dtype.is_float and floats else value.dtype


def lazy_declared(graph: Graph, inputs: Arrays, weights: Weights) -> Callable[[], list[np.ndarray]]:
    """The declared-precision reference, computed on first use (most checks never need it)."""
    cache: list[list[np.ndarray]] = []

    def get() -> list[np.ndarray]:
        if not cache:
            cache.append(interpret(graph, inputs, weights, "declared"))
        return cache[0]

    return get


class PipelineError(RuntimeError):
    """A pass crashed on a graph `run_target` was to lower: shipei's bug, not the target's."""


def run_target(graph: Graph, target: str, inputs: Arrays, weights: Weights, device: str = "cpu",
               opt: int = 0, **options: Any) -> list[np.ndarray]:
    """Emit (with `codegen.emit`'s `options`), load and run `target`'s program in this process;
    numpy in, numpy out. With `opt` > 0 the program is what `shipei.compile(graph, target,
    opt=opt, freeze=True)` makes: the -O pipeline runs first, with the weights frozen. The target
    `HETERO` is every available framework at once: the graph partitioned over them (`spread`)."""
    from ..runtime import Executable
    from ..runtime.executable import write_generated

    if target == HETERO:
        return run_partitioned(graph, inputs, weights, spread(graph, available_targets()), available_targets(),
                               device, opt)
    if opt:
        from ..api import compile as compile_

        try:
            compiled = compile_(graph, target, opt=opt, freeze=True, weights=weights, options=options)
        except ShipeiError:
            raise
        except Exception as e:  # noqa: BLE001 - named as shipei's, so a finding does not blame the framework
            raise PipelineError(f"shipei's -O{opt} pipeline, before {target} saw the graph: "
                                f"{type(e).__name__}: {e}") from e
        graph, weights, module = compiled.ir, compiled.weights, compiled.module
    else:
        module = emit(graph, target, **options)
    return Executable(graph, target, write_generated(module), weights, device).run(*inputs)


#: The pseudo-target of heterogeneous checks: one graph over every available framework.
HETERO = "hetero"


def spread(graph: Graph, targets: Sequence[str]) -> list[str | None]:
    """Placements for `graph`'s nodes that use every target (each node on one that lowers it, or
    left to the cost model), drawn from a seed the graph's text gives: a graph is placed the
    same way each time it is run."""
    import random
    import zlib

    from ..ir.printer import print_graph

    rng = random.Random(zlib.crc32(print_graph(graph).encode()))
    tables = {t: lowers(t) for t in targets}
    out: list[str | None] = []
    for node in graph.nodes:
        able = [t for t in targets if _lowers(tables[t], node)]
        out.append(f"{rng.choice(able)}:cpu" if node.operands and able and rng.random() < 0.6 else None)
    return out


def lowers(target: str) -> dict[str, frozenset[DType]]:
    from ..codegen import capabilities

    return capabilities(target)  # cached there, per target and registry


def _lowers(table: dict[str, frozenset[DType]], node) -> bool:
    return all(v.dtype in table.get(node.op, ()) for v in (*node.operands, *node.results))


def run_partitioned(graph: Graph, inputs: Arrays, weights: Weights, placements: Sequence[str | None],
                    targets: Sequence[str], device: str = "cpu", opt: int = 0) -> list[np.ndarray]:
    """`graph` with its nodes hinted to `placements` (None: the cost model chooses) among
    `targets` on `device`, partitioned, compiled stage by stage and run as a pipeline here."""
    from ..api import optimize
    from ..ir.passes.manager import PassContext
    from ..ir.passes.partition import PartitionRequest
    from ..ir.passes.rewrite import clone
    from ..ir.placement import Placement
    from ..partitioned import compile_pipeline

    hinted = clone(graph)
    for node, place in zip(hinted.nodes, placements, strict=True):
        node.placement = Placement.parse(place) if place else None
    ctx = PassContext(weights=dict(weights), frozen=bool(opt))
    ctx.partition = PartitionRequest([Placement(t, device) for t in targets], {t: lowers(t) for t in targets})
    try:
        hinted = optimize(hinted, opt, context=ctx)
        compiled = compile_pipeline(hinted, ctx, "<graph>", {})
    except ShipeiError:
        raise
    except Exception as e:  # noqa: BLE001 - named as shipei's, so a finding does not blame a framework
        raise PipelineError(f"shipei's partitioning, before the frameworks saw the graph: "
                            f"{type(e).__name__}: {e}") from e
    exe = compiled.load(pin=False)  # no thread of a test process is pinned to a core
    try:
        return exe.run(*inputs)
    finally:
        exe.close()


Probe = Callable[[Graph, Arrays, Weights], "Failure | None"]


def probe_in_process(target: str, device: str = "cpu", opt: int = 0) -> Probe:
    """A probe that runs `target` here (at `opt`, as `run_target`); reference problems count as
    no failure."""

    def probe(graph: Graph, inputs: Arrays, weights: Weights) -> Failure | None:
        ref = reference(graph, inputs, weights)
        if ref.problem:
            return None
        try:
            outputs = run_target(graph, target, inputs, weights, device, opt)
        except ShipeiError:
            raise
        except Exception as e:  # noqa: BLE001 - a framework's exception is the finding
            return Failure(target, "error", detail=f"{type(e).__name__}: {e}")
        return check_outputs(graph, outputs, ref, target, lazy_declared(graph, inputs, weights))

    return probe


# -- minimization ------------------------------------------------------------------------
def subgraph(graph: Graph, inputs: Arrays, weights: Weights, outputs: list[Value], cuts: set[Value],
             values: dict[Value, np.ndarray]) -> tuple[Graph, list[np.ndarray], Weights]:
    """The part of `graph` that computes `outputs`, with each value in `cuts` turned into a graph
    input holding its reference value (so the nodes that computed it drop out)."""
    out, sources = extract(graph, outputs, cuts)
    given = dict(zip(graph.inputs, inputs))
    arrays = [np.asarray(given[v]) if v in given else np.asarray(values[v]).astype(v.dtype.numpy) for v in sources]
    return out, arrays, {p.name: weights[p.name] for p in out.params}


@dataclass
class Minimized:
    graph: Graph
    inputs: list[np.ndarray]
    weights: Weights
    failure: Failure
    runs: int = 0
    steps: list[str] = field(default_factory=list)


def minimize(graph: Graph, inputs: Arrays, weights: Weights, failure: Failure, probe: Probe,
             max_runs: int = 40, max_seconds: float = 60.0) -> Minimized:
    """Shrink a failing graph while `probe` keeps reporting the same failure (see the module doc)."""
    start = time.monotonic()
    try:
        values = reference(graph, inputs, weights).values
    except Exception:  # noqa: BLE001 - the reference itself fails: only outputs can be dropped
        values = {}
    results = [r for n in graph.nodes for r in n.results]
    best = Minimized(graph, list(inputs), dict(weights), failure)
    state: dict[str, Any] = {"outputs": list(graph.outputs), "cuts": set()}

    def attempt(outputs: list[Value], cuts: set[Value], why: str, *, accept_any_output: bool = False) -> bool:
        if best.runs >= max_runs or time.monotonic() - start > max_seconds:
            return False
        try:
            g, xs, ws = subgraph(graph, inputs, weights, outputs, cuts, values)
            verify(g)
        except (ShipeiError, KeyError):  # KeyError: a cut without a reference value
            return False
        best.runs += 1
        found = probe(g, xs, ws)
        if not failure.same(found):
            return False
        if accept_any_output:  # an all-values probe: the first failing value becomes the output
            outputs = [outputs[found.output]]
            g, xs, ws = subgraph(graph, inputs, weights, outputs, cuts, values)
            found = Failure(found.target, found.kind, 0, found.worst, found.detail)
        best.graph, best.inputs, best.weights, best.failure = g, xs, ws, found
        state["outputs"], state["cuts"] = outputs, set(cuts)
        best.steps.append(why)
        return True

    if failure.kind == "mismatch" and len(results) > 1:
        attempt(results, set(), "first failing value", accept_any_output=True)
    if len(state["outputs"]) > 1 or failure.kind != "mismatch":
        for v in results:  # the earliest value that fails alone
            if attempt([v], set(), f"only output {v.producer.op}"):
                break
    for v in list(state["outputs"]):  # else drop outputs one at a time
        if len(state["outputs"]) > 1:
            attempt([o for o in state["outputs"] if o is not v], state["cuts"], "drop an output")
    producers = {v.producer for v in state["outputs"] if v.producer is not None}
    feeding = {v for n in producers for v in n.operands if v.producer is not None}
    if feeding and not attempt(state["outputs"], state["cuts"] | feeding, "cut every operand"):
        for node in reversed(graph.nodes):  # one node at a time, latest first
            live = cone(state["outputs"], state["cuts"])
            rs = [r for r in node.results if r not in state["cuts"]]
            if node in producers or not any(r in live for r in rs):
                continue
            attempt(state["outputs"], state["cuts"] | set(rs), f"cut {node.op}")
    return best


# -- the assertion -----------------------------------------------------------------------
class LoweringMismatch(AssertionError):
    """A target disagrees with the reference, or fails, on a graph; the message is a bug report.

    Attributes: `target`, `failure` (the `Failure`), `graph`, `program` (DSL text), `inputs`,
    `weights` (of the minimized graph when minimization ran) and `seed`.
    """

    def __init__(self, failure: Failure, graph: Graph, program: str, inputs: Arrays, weights: Weights,
                 seed: int | None, note: str = ""):
        self.failure, self.target = failure, failure.target
        self.graph, self.program, self.inputs, self.weights, self.seed = graph, program, list(inputs), weights, seed
        origin = (f"seed {seed} (shipei.testing.make_inputs(graph, {seed}))" if seed is not None
                  else "given by the caller")
        lines = [failure.describe(graph), f"inputs: {origin}{note}", "program:"]
        lines += ["    " + line for line in program.rstrip("\n").splitlines()]
        super().__init__("\n".join(lines))


def _program(graph: Graph) -> str:
    from ..frontend.unparse import unparse

    try:
        return unparse(graph)
    except ShipeiError:
        from ..ir.printer import print_graph

        return print_graph(graph)


def _in_hypothesis() -> bool:
    try:
        from hypothesis import currently_in_test_context
    except ImportError:
        return False
    return currently_in_test_context()


def assert_lowering_correct(graph_or_source: Graph | str, targets: Sequence[str] | None = None,
                            inputs: Arrays | None = None, seed: int = 0, *, device: str = "cpu",
                            minimize_failure: bool | None = None, opt: int = 0,
                            placements: Sequence[str | None] | None = None) -> None:
    """Run the reference and each target on `graph_or_source` (a Graph, DSL text or a .sp path)
    and raise `LoweringMismatch` at the first target outside tolerance or failing.

    `targets` defaults to every available one. Without `inputs`, they are drawn by
    `make_inputs(graph, seed)` (the next seeds if values leave the dtype's range); weights are
    `init_params(graph, seed)`. A failure is minimized first unless running under Hypothesis,
    which shrinks by itself (`minimize_failure` overrides). With `opt` > 0 each target runs the
    program the -O pipeline makes with frozen weights, judged by the graph's own reference.

    With `placements` (one per node, as `shipei.testing.placements()` draws them: "jax:cpu", or
    None for the cost model to choose), the graph runs once, partitioned over `targets` as a
    pipeline of their programs, and is judged the same way.
    """
    from ..api import parse

    graph = parse(graph_or_source)
    names = list(targets) if targets is not None else available_targets()
    weights = init_params(graph, seed)
    if inputs is None:
        inputs, ref = sample_inputs(graph, seed, weights)
        input_seed: int | None = inputs.seed
        if ref.problem and _in_hypothesis():
            from hypothesis import reject

            reject()
    else:
        inputs = [np.asarray(a) for a in inputs]
        ref, input_seed = reference(graph, inputs, weights), getattr(inputs, "seed", None)
    declared = lazy_declared(graph, inputs, weights)
    if placements is not None:
        _check_partitioned(graph, inputs, weights, placements, names, device, opt, ref, declared, input_seed)
        return
    for target in names:
        probe = probe_in_process(target, device, opt)
        try:
            outputs = run_target(graph, target, inputs, weights, device, opt)
            failure = check_outputs(graph, outputs, ref, target, declared)
        except ShipeiError:
            raise
        except Exception as e:  # noqa: BLE001
            failure = Failure(target, "error", detail=f"{type(e).__name__}: {e}")
        if failure is None:
            continue
        program = graph_or_source if isinstance(graph_or_source, str) and "\n" in graph_or_source else None
        shrink = not _in_hypothesis() if minimize_failure is None else minimize_failure
        if shrink:
            small = minimize(graph, inputs, weights, failure, probe)
            if small.steps:
                note = (f"; minimized from {len(graph.nodes)} to {len(small.graph.nodes)} nodes, its inputs are "
                        "the error's .inputs")
                raise LoweringMismatch(small.failure, small.graph, _program(small.graph), small.inputs,
                                       small.weights, None, note) from None
        raise LoweringMismatch(failure, graph, program or _program(graph), inputs, weights, input_seed)


def _check_partitioned(graph: Graph, inputs: Arrays, weights: Weights, placements: Sequence[str | None],
                       targets: Sequence[str], device: str, opt: int, ref: Reference,
                       declared: Callable[[], list[np.ndarray]], input_seed: int | None) -> None:
    """The partitioned run of `assert_lowering_correct`; its failure is not minimized, since the
    placements belong to the graph as drawn."""
    name = f"{HETERO}({','.join(targets)})"
    try:
        outputs = run_partitioned(graph, inputs, weights, placements, targets, device, opt)
        failure = check_outputs(graph, outputs, ref, name, declared)
    except ShipeiError:
        raise
    except Exception as e:  # noqa: BLE001
        failure = Failure(name, "error", detail=f"{type(e).__name__}: {e}")
    if failure is not None:
        where = ", ".join(f"{n.op}: {p}" for n, p in zip(graph.nodes, placements) if p)
        raise LoweringMismatch(failure, graph, _program(graph), inputs, weights, input_seed, f"; placed {where}")
