"""Sample uses of every op, PyTorch OpInfo-style: operand types and attributes that exercise
broadcasting, attribute variants and edge values. The all-ops x all-targets test and the
property-test generators read this table; an op without samples fails the coverage test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .graph import Builder, Graph
from .ops.elementwise import DOMAINS
from .registry import FusionKind, all_ops
from .types import DType, TensorType


@dataclass(frozen=True)
class Sample:
    """One use of an op: operand types (dtype filled per test), attributes and input domain."""

    shapes: tuple[tuple[int, ...], ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    int_operands: tuple[int, ...] = ()       # operands that are indices (i64), not data
    bool_operands: tuple[int, ...] = ()      # operands that are conditions


_UNARY = [Sample(((2, 3, 4),)), Sample(((5,),))]
_BINARY = [Sample(((2, 3, 4), (3, 1))), Sample(((4, 1), (1, 5)))]

SAMPLES: dict[str, list[Sample]] = {
    "gelu": [Sample(((2, 3, 4),)), Sample(((6,),), {"approximate": "tanh"})],
    "dropout": [Sample(((2, 3),), {"p": 0.1})],
    "where": [Sample(((2, 3, 4), (3, 4), (2, 1, 4)), bool_operands=(0,))],
    "cast": [Sample(((3, 4),), {"dtype": DType.f64}), Sample(((3, 4),), {"dtype": DType.i32}),
             Sample(((3, 4),), {"dtype": DType.bool})],
    "matmul": [Sample(((3, 4), (4, 5))), Sample(((2, 3, 4), (4, 6))), Sample(((2, 1, 3, 4), (5, 4, 2)))],
    "linear": [Sample(((2, 3, 4), (5, 4), (5,))), Sample(((3, 4), (6, 4)))],
    "attention": [Sample(((2, 3, 4), (2, 5, 4), (2, 5, 6)), {"scale": 0.5}),
                  Sample(((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)), {"scale": 0.35, "causal": True}),
                  Sample(((2, 5, 4), (2, 3, 4), (2, 3, 2)), {"scale": 0.5, "causal": True})],
    "conv2d": [Sample(((2, 4, 7, 7), (6, 4, 3, 3))),
               Sample(((1, 4, 8, 8), (6, 2, 3, 3)), {"stride": (2, 2), "padding": (1, 1), "dilation": (2, 2),
                                                     "groups": 2})],
    "max_pool2d": [Sample(((2, 3, 6, 6),), {"kernel": (2, 2), "stride": (2, 2)}),
                   Sample(((1, 2, 7, 7),), {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)})],
    "avg_pool2d": [Sample(((2, 3, 6, 6),), {"kernel": (2, 2), "stride": (2, 2)}),
                   Sample(((1, 2, 7, 7),), {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1),
                                            "count_include_pad": False})],
    **{f"reduce_{r}": [Sample(((2, 3, 4),), {"axes": (1,)}), Sample(((2, 3, 4),), {"axes": (-1, 0), "keepdims": True}),
                       Sample(((3, 4),), {"axes": None})] for r in ("sum", "mean", "max", "min")},
    "softmax": [Sample(((2, 5),), {"axis": -1}), Sample(((2, 3, 4),), {"axis": 1})],
    "log_softmax": [Sample(((2, 5),), {"axis": -1}), Sample(((2, 3, 4),), {"axis": 0})],
    "layer_norm": [Sample(((2, 3, 8), (8,), (8,)), {"eps": 1e-5}), Sample(((2, 3, 4), (3, 4), (3, 4)))],
    "batch_norm": [Sample(((2, 3, 4, 4), (3,), (3,), (3,), (3,))), Sample(((4, 3), (3,), (3,), (3,), (3,))),
                   Sample(((2, 3, 5), (3,), (3,), (3,), (3,)))],
    "reshape": [Sample(((2, 3, 4),), {"shape": (6, 4)}), Sample(((2, 6),), {"shape": (3, 2, 2)})],
    "transpose": [Sample(((2, 3, 4),), {"perm": (2, 0, 1)}), Sample(((3, 4),), {"perm": (1, 0)})],
    "broadcast_to": [Sample(((3, 1),), {"shape": (2, 3, 4)})],
    "concat": [Sample(((2, 3), (2, 1), (2, 2)), {"axis": 1}), Sample(((1, 3), (2, 3)), {"axis": 0})],
    "split": [Sample(((2, 6),), {"sizes": (1, 2, 3), "axis": 1}), Sample(((4, 3),), {"sizes": (2, 2), "axis": 0})],
    "slice": [Sample(((5, 6),), {"axes": (0, 1), "starts": (1, -4), "stops": (4, 6), "steps": (1, 2)}),
              Sample(((3, 4, 5),), {"axes": (2,), "starts": (0,), "stops": (2**62,), "steps": (3,)})],
    "gather": [Sample(((5, 3), (4,)), {"axis": 0}, int_operands=(1,)),
               Sample(((2, 5, 3), (2, 2)), {"axis": 1}, int_operands=(1,))],
    "pad": [Sample(((2, 3),), {"pads": (1, 0, 2, 1), "value": 0.0}), Sample(((2, 2, 2),), {"pads": (0, 0, 1, 1, 0, 2),
                                                                                       "value": -1.5})],
    "constant": [Sample((), {"value": np.array([[1.5, -2.0], [0.25, 3.0]])}), Sample((), {"value": np.array(0.5)})],
    "iota": [Sample((), {"length": 5})],
    "transfer": [Sample(((2, 3),), {})],
}


def samples(op: str) -> list[Sample]:
    """The samples for `op`; elementwise ops not listed get the generic unary/binary shapes."""
    if op in SAMPLES:
        return SAMPLES[op]
    opdef = all_ops()[op]
    if opdef.fusion in (FusionKind.ELEMWISE, FusionKind.BROADCAST):
        return _BINARY if len(opdef.operands) == 2 else _UNARY if len(opdef.operands) == 1 else []
    return []


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
    for i, shape in enumerate(sample.shapes):
        d = DType.i64 if i in sample.int_operands else DType.bool if i in sample.bool_operands else dtype
        operands.append(b.input(f"x{i}", TensorType(d, shape)))
    attrs = dict(sample.attrs)
    if op in ("constant", "iota"):
        attrs.setdefault("dtype", dtype)
    graph.outputs = b.op(op, *operands, **attrs)
    return graph


def inputs(op: str, sample: Sample, graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Inputs inside the op's domain: positive where log/sqrt need it, nonzero divisors, valid
    indices, and a few exact zeros and negatives elsewhere to exercise edges."""
    rng = np.random.default_rng(seed)
    domain = DOMAINS.get(op, "")
    out = []
    for i, v in enumerate(graph.inputs):
        shape = tuple(int(d) for d in v.shape)
        if i in sample.int_operands:
            bound = sample.shapes[0][sample.attrs.get("axis", 0)]
            out.append(rng.integers(0, bound, shape).astype(np.int64))
            continue
        if v.dtype is DType.bool:
            out.append(rng.random(shape) < 0.5)
            continue
        x = rng.uniform(-3, 3, shape)
        if domain == "positive" or (domain == "positive-lhs" and i == 0):
            x = np.abs(x) + 0.1
        elif domain == "nonnegative":
            x = np.abs(x)
        elif domain == "nonzero-rhs" and i == 1:
            x = np.sign(x + 1e-9) * (np.abs(x) + 0.5)
        elif x.size > 2:
            x.flat[0] = 0.0
        if not v.dtype.is_float:
            x = np.round(x * 10)
        out.append(x.astype(v.dtype.numpy))
    return out


def cases() -> Iterator[tuple[str, int, Sample]]:
    for op in sorted(all_ops()):
        for i, sample in enumerate(samples(op)):
            yield op, i, sample
