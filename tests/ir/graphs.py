"""Graphs for IR tests: the registry's samples of every op, a few hand-built models, and a
structural equality check (what "parse(print(g)) equals g" means)."""

from __future__ import annotations

from typing import Any

import numpy as np
from shipei.ir.errors import ShipeiError
from shipei.ir.graph import Builder, Graph, Init, Value
from shipei.ir.registry import Sample
from shipei.ir.samples import build, dtypes_for, samples
from shipei.ir.types import DType, Sym, TensorType

B, T = Sym.named("B"), Sym.named("T")
END = 2**62  # slice's "to the end" stop


def t(dtype: str, *shape: Any) -> TensorType:
    return TensorType(DType(dtype), tuple(shape))


def sample_graphs(op: str) -> list[Graph]:
    """One graph per registry sample of `op` (`OpDef.samples`), at the first dtype it accepts,
    with the leading dim of the first operand, and of every operand sharing it, made the symbol B
    where the type rule accepts that: so printing and parsing see symbolic shapes too."""
    graphs = []
    for sample in samples(op):
        dtype = dtypes_for(op)[0]
        lead = sample.shapes[0][0] if sample.shapes and sample.shapes[0] else None
        symbolic = Sample(tuple((B, *s[1:]) if s and s[0] == lead else s for s in sample.shapes), sample.attrs,
                          sample.bool_operands)
        try:
            graphs.append(build(op, symbolic, dtype))
        except ShipeiError:
            graphs.append(build(op, sample, dtype))
    return graphs


def sample_graph(op: str) -> Graph:
    """A graph applying `op` once to inputs %x0, %x1, ...; it returns every result."""
    return sample_graphs(op)[0]


def mlp() -> Graph:
    """A two-layer MLP with weights, a buffer and a dropout, as the frontend would build it."""
    g = Graph("MLP")
    b = Builder(g)
    x = b.input("x", t("f32", B, 784))
    w1 = b.add_param("fc1.weight", t("f32", 256, 784), Init("kaiming_uniform", (("fan_in", 784),)))
    b1 = b.add_param("fc1.bias", t("f32", 256), Init("zeros"))
    w2 = b.add_param("fc2.weight", t("f32", 10, 256), Init("uniform", (("low", -0.0625), ("high", 0.0625))))
    scale = b.add_param("scale", t("f32", 10), Init("full", (("value", 1.0),)), buffer=True)
    h = b("relu", b("add", b("matmul", x, b("transpose", w1, perm=(1, 0))), b1))
    h = b("dropout", h, p=0.25)
    y = b("mul", b("matmul", h, b("transpose", w2, perm=(1, 0))), scale)
    g.outputs = [b("softmax", y, axis=-1)]
    return g


def assert_graphs_equal(a: Graph, b: Graph) -> None:
    """Same name, inputs, params (types, initializers), nodes (ops, operands, attributes, result
    types, locs, devices) and outputs; values are matched by position."""
    assert a.name == b.name
    index_a, index_b = _positions(a), _positions(b)
    assert [len(a.inputs), len(a.params)] == [len(b.inputs), len(b.params)]
    for va, vb in zip(a.inputs + a.params, b.inputs + b.params, strict=True):
        assert (va.name, va.type, va.producer, va.param is None) == (vb.name, vb.type, vb.producer, vb.param is None)
        if va.param:
            assert (va.param.buffer, va.param.init.name) == (vb.param.buffer, vb.param.init.name)
            assert _same(va.param.init.args, vb.param.init.args), (va.param, vb.param)
    for i, (na, nb) in enumerate(zip(a.nodes, b.nodes, strict=True)):
        assert na.op == nb.op, i
        assert [index_a[v] for v in na.operands] == [index_b[v] for v in nb.operands], i
        assert list(na.attrs) == list(nb.attrs) and all(_same(na.attrs[k], nb.attrs[k]) for k in na.attrs), i
        assert [r.type for r in na.results] == [r.type for r in nb.results], i
        assert all(r.producer is n and r.index == j for n in (na, nb) for j, r in enumerate(n.results))
        assert (na.loc, na.placement) == (nb.loc, nb.placement), i
    assert [index_a[v] for v in a.outputs] == [index_b[v] for v in b.outputs]


def _positions(g: Graph) -> dict[Value, int]:
    values = g.inputs + g.params + [r for n in g.nodes for r in n.results]
    return {v: i for i, v in enumerate(values)}


def _same(x: Any, y: Any) -> bool:
    """Equal including type, with -0.0 distinct from 0.0 and every nan equal (the text does not
    keep a nan's sign or payload); arrays need only the same kind of dtype."""
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        if x.shape != y.shape or (x.size and x.dtype.kind != y.dtype.kind):
            return False
        if x.dtype.kind != "f":
            return np.array_equal(x, y)
        x, y = x.astype(np.float64), y.astype(np.float64)
        return np.array_equal(x, y, equal_nan=True) and np.array_equal(np.signbit(x) | np.isnan(x),
                                                                        np.signbit(y) | np.isnan(y))
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return type(x) is type(y) and len(x) == len(y) and all(map(_same, x, y))
    return type(x) is type(y) and (repr(x) == repr(y) if isinstance(x, float) else x == y)
