"""Graphs for IR tests: one small sample per registered op, a few hand-built models, and a
structural equality check (what "parse(print(g)) equals g" means)."""

from __future__ import annotations

from typing import Any

import numpy as np
from shipei.ir.graph import Builder, Graph, Init, Value
from shipei.ir.types import DType, Sym, TensorType, dim_add, dim_mul

B, T = Sym.named("B"), Sym.named("T")
END = 2**62  # slice's "to the end" stop


def t(dtype: str, *shape: Any) -> TensorType:
    return TensorType(DType(dtype), tuple(shape))


F, BOOL, I64 = t("f32", B, 3), t("bool", B, 3), t("i64", B, 3)
UNARY = {"neg": F, "abs": F, "exp": F, "log": F, "sqrt": F, "rsqrt": F, "sin": F, "cos": F, "tanh": F,
         "erf": F, "floor": F, "sigmoid": F, "relu": t("i32", B), "silu": F, "logical_not": BOOL}
BINARY = {"add": F, "sub": F, "mul": I64, "div": F, "pow": F, "maximum": F, "minimum": I64,
          "eq": I64, "ne": F, "lt": F, "le": I64, "gt": F, "ge": F, "logical_and": BOOL, "logical_or": BOOL}

#: op name -> (operand types, attributes): one well-typed node per op, symbolic where it can be.
SAMPLES: dict[str, tuple[list[TensorType], dict[str, Any]]] = {
    **{op: ([ty], {}) for op, ty in UNARY.items()},
    **{op: ([ty, ty.with_shape(ty.shape[1:])], {}) for op, ty in BINARY.items()},
    "gelu": ([F], {"approximate": "tanh"}),
    "dropout": ([F], {"p": 0.1}),
    "where": ([t("bool", B, 1), F, t("f32", 3)], {}),
    "cast": ([F], {"dtype": DType.bf16}),
    "matmul": ([t("f32", B, 4, 5), t("f32", 5, 6)], {}),
    "linear": ([t("f32", B, T, 5), t("f32", 6, 5), t("f32", 6)], {}),
    "attention": ([t("f32", B, 4, T, 8), t("f32", B, 4, T, 8), t("f32", B, 4, T, 6)], {"scale": 0.25,
                                                                                       "causal": True}),
    "conv2d": ([t("f32", B, 4, 8, 8), t("f32", 6, 2, 3, 3)], {"stride": (2, 2), "padding": (1,), "groups": 2}),
    "max_pool2d": ([t("f32", 2, 3, 8, 8)], {"kernel": (2, 2), "stride": (2, 2)}),
    "avg_pool2d": ([t("f16", 2, 3, 5, 5)], {"kernel": (3,), "stride": (1,), "padding": (1, 1),
                                            "count_include_pad": False}),
    "reduce_sum": ([t("i32", B, T, 3)], {"axes": (1, -1), "keepdims": True}),
    "reduce_mean": ([F], {}),
    "reduce_max": ([F], {"axes": (0,)}),
    "reduce_min": ([I64], {"axes": None, "keepdims": True}),
    "softmax": ([F], {"axis": 0}),
    "log_softmax": ([t("f64", B, T)], {}),
    "layer_norm": ([t("f32", B, T, 8), t("f32", 8), t("f32", 8)], {"eps": 1e-6}),
    "batch_norm": ([t("f32", B, 4, 5, 5)] + [t("f32", 4)] * 4, {"eps": 0.001}),
    "reshape": ([t("f32", B, T, 4)], {"shape": (dim_mul(B, T), 2, 2)}),
    "transpose": ([t("f32", B, T, 4)], {"perm": (2, 0, 1)}),
    "broadcast_to": ([t("f32", 1, 3)], {"shape": (B, 3)}),
    "concat": ([t("f32", B, 2), t("f32", B, T)], {"axis": -1}),
    "split": ([t("f32", B, 5)], {"sizes": (2, 3), "axis": 1}),
    "slice": ([t("f32", B, 10)], {"axes": (1,), "starts": (1,), "stops": (END,), "steps": (2,)}),
    "gather": ([t("f32", 10, 4), t("i64", B, T)], {"axis": 0}),
    "pad": ([F], {"pads": (0, 1, 2, 0), "value": -np.inf}),
    "constant": ([], {"value": np.array([[1.5, -0.0], [np.inf, np.nan]]), "dtype": DType.f32}),
    "iota": ([], {"length": dim_add(dim_mul(B, T), 1), "dtype": DType.i32}),
    "transfer": ([t("f32", B, 4)], {}),
}


def sample_graph(op: str) -> Graph:
    """A graph applying `op` once to inputs %x0, %x1, ...; it returns every result."""
    types, attrs = SAMPLES[op]
    g = Graph(f"sample_{op}")
    b = Builder(g)
    inputs = [b.input(f"x{i}", ty) for i, ty in enumerate(types)]
    g.outputs = b.op(op, *inputs, **attrs)
    return g


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
