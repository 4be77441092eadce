"""Sample uses of every op, PyTorch OpInfo-style, as its definition gives them (`OpDef.samples`):
operand types and attributes that exercise broadcasting, attribute variants and edge values.
The all-ops x all-targets test and the property-test generators read them; an op without samples
fails the coverage test. Elementwise ops that give none get generic unary or binary shapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .graph import Builder, Graph
from .inputs import random_inputs
from .registry import FusionKind, Sample, all_ops, get_op
from .types import DType, TensorType

_UNARY = (Sample(((2, 3, 4),)), Sample(((5,),)))
_BINARY = (Sample(((2, 3, 4), (3, 1))), Sample(((4, 1), (1, 5))))


def samples(op: str) -> Sequence[Sample]:
    """The samples for `op`; an elementwise op that gives none gets the generic unary/binary shapes."""
    opdef = get_op(op)
    if opdef.samples:
        return opdef.samples
    if opdef.fusion in (FusionKind.ELEMWISE, FusionKind.BROADCAST):
        return _BINARY if len(opdef.operands) == 2 else _UNARY if len(opdef.operands) == 1 else ()
    return ()


def dtypes_for(op: str) -> list[DType]:
    """Dtypes the op's type rule accepts on its first data operand (by trying each)."""
    out = []
    for dtype in DType:
        try:
            build(op, samples(op)[0], dtype)
            out.append(dtype)
        except Exception:  # noqa: BLE001 - a rejected dtype is exactly what we are probing for
            continue
    return out


def build(op: str, sample: Sample, dtype: DType) -> Graph:
    """A one-op graph: inputs for the sample's operands, the op, its results as outputs."""
    graph = Graph(f"op_{op}")
    b = Builder(graph)
    operands = []
    index_operands = get_op(op).index_operands()
    for i, shape in enumerate(sample.shapes):
        d = DType.i64 if i in index_operands else DType.bool if i in sample.bool_operands else dtype
        operands.append(b.input(f"x{i}", TensorType(d, shape)))
    attrs = dict(sample.attrs)
    if op in ("constant", "iota"):
        attrs.setdefault("dtype", dtype)
    graph.outputs = b.op(op, *operands, **attrs)
    return graph


def inputs(op: str, sample: Sample, graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Inputs inside the op's domain (`ir.inputs`): positive where log/sqrt need it, nonzero
    divisors, valid indices, and an exact zero first elsewhere to exercise edges."""
    return random_inputs(graph, seed, scale=3.0, edges=True, ints=(-30, 31))


def cases() -> Iterator[tuple[str, int, Sample]]:
    for op in sorted(all_ops()):
        for i, sample in enumerate(samples(op)):
            yield op, i, sample
