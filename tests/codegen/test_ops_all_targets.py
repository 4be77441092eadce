"""Every op x every target x every dtype the target supports, against the reference interpreter.

Generated from the registry (`ir.samples`) and the targets' capability tables: a new op without
samples or lowerings fails here, so coverage cannot silently regress. A composite op runs both
ways: as the graph holds it (the target's own lowering where it has one) and decomposed into
primitives first (what a target without one runs). Each program costs a
framework compile (~0.1 s for jit/XLA/graph mode), so cases of one (target, dtype) are merged
into programs of CHUNK cases; where a merged program fails, each case runs alone so that the
failure names its op.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from shipei.codegen import TARGETS, capabilities, emit, get_target
from shipei.ir.errors import ShipeiError
from shipei.ir.graph import Graph, disjoint_union
from shipei.ir.interpreter import interpret
from shipei.ir.passes.decompose import decompose
from shipei.ir.registry import all_ops
from shipei.ir.samples import build, cases, dtypes_for, inputs, samples
from shipei.ir.tolerance import compare
from shipei.ir.types import DType
from shipei.runtime.executable import import_generated

CHUNK = 8

Case = tuple[str, str, int, DType, str]  # target, op, sample index, dtype, path ("as-is" or "decomposed")


def _graph(op: str, index: int, dtype: DType, path: str) -> Graph:
    graph = build(op, samples(op)[index], dtype)
    if path == "decomposed":
        decompose(graph)
    return graph


def _inputs(op: str, index: int, dtype: DType) -> list[np.ndarray]:
    """Inputs in the op's domain, drawn for the op itself (a decomposed one no longer says which of
    its inputs are indices)."""
    sample = samples(op)[index]
    return inputs(op, sample, build(op, sample, dtype))


def _supported(target: str, graph: Graph) -> bool:
    table = capabilities(target)
    return all(v.dtype in table.get(n.op, ()) for n in graph.nodes for v in n.operands + n.results)


ALL_CASES: list[Case] = [(t, op, i, d, path) for t in TARGETS for op, i, _ in cases() for d in dtypes_for(op)
                         for path in (("as-is", "decomposed") if all_ops()[op].composite else ("as-is",))]
SUPPORTED = [c for c in ALL_CASES if _supported(c[0], _graph(*c[1:]))]
UNSUPPORTED = [c for c in ALL_CASES if c not in SUPPORTED and c[4] == "as-is"]


def _run(target: str, graph: Graph, xs: list[np.ndarray]) -> list[np.ndarray]:
    module = import_generated(emit(graph, target, "ops.sp"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module.run(module.load({}, "cpu"), xs, "cpu")


def _chunk_of(case: Case) -> tuple[Case, ...]:
    same = [c for c in SUPPORTED if (c[0], c[3], c[4]) == (case[0], case[3], case[4])]
    start = same.index(case) // CHUNK * CHUNK
    return tuple(same[start:start + CHUNK])


@functools.cache
def _chunk_outputs(chunk: tuple[Case, ...]) -> dict[Case, list[np.ndarray]]:
    """Every case's outputs from one program, or {} when the merged program fails."""
    graphs = [_graph(*c[1:]) for c in chunk]
    xs = [x for _, op, i, d, _ in chunk for x in _inputs(op, i, d)]
    try:
        outputs = _run(chunk[0][0], disjoint_union(graphs, "Ops"), xs)
    except Exception:  # noqa: BLE001 - each case then runs alone and reports its own error
        return {}
    ends = np.cumsum([len(g.outputs) for g in graphs])
    return {c: outputs[end - len(g.outputs):end] for c, end, g in zip(chunk, ends, graphs, strict=True)}


def _param(case: Case) -> object:
    """One xdist worker takes all cases of a (target, dtype), so each program compiles once."""
    return pytest.param(case, id="-".join(map(str, case)),
                        marks=pytest.mark.xdist_group(f"{case[0]}-{case[3]}-{case[4]}"))


@pytest.mark.parametrize("case", [_param(c) for c in SUPPORTED])
def test_op_matches_reference(case: Case) -> None:
    target, op, index, dtype, path = case
    sample = samples(op)[index]
    graph = _graph(op, index, dtype, path)
    xs = _inputs(op, index, dtype)
    expected = interpret(build(op, sample, dtype), xs, {}, precision="f64")
    actual = _chunk_outputs(_chunk_of(case)).get(case) or _run(target, graph, xs)
    for got, want, value in zip(actual, expected, graph.outputs, strict=True):
        assert got.shape == want.shape, f"{op} on {target}: shape {got.shape} != {want.shape}"
        # Raw module output, before the runtime's cast: a silently promoted dtype shows here.
        assert got.dtype == (np.float32 if value.dtype is DType.bf16 else value.dtype.numpy), f"{op}: {got.dtype}"
        worst = compare(got, want, value.dtype)
        assert worst.ok, f"{op}[{index}] {dtype} on {target}, {path}: {worst}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_op_has_a_lowering_or_a_decomposition(target: str) -> None:
    """Every op a program computes; a transfer is the hand-off between two programs, made by the runtime."""
    native = set(get_target(target).rules)
    lowered = {name for name, op in all_ops().items() if name in native or op.composite}
    assert lowered == {name for name, op in all_ops().items() if "transfer" not in op.traits}
    assert set(capabilities(target)) == lowered


@pytest.mark.parametrize("case", UNSUPPORTED or [None], ids=["-".join(map(str, c)) for c in UNSUPPORTED] or ["none"])
def test_declared_exclusions_refuse_to_lower(case: Case | None) -> None:
    """An op x dtype a capability table excludes is a compile error naming op and target."""
    if case is None:
        assert not UNSUPPORTED
        return
    target, op, index, dtype, _ = case
    with pytest.raises(ShipeiError, match=f"target '{target}' cannot lower op '{op}'"):
        emit(build(op, samples(op)[index], dtype), target)


def test_every_op_has_samples() -> None:
    assert [op for op in all_ops() if not samples(op)] == []
