"""The numpy interpreter is the spec; here the spec is checked against torch's functional ops.

`CASES` holds one case per registered op: its inputs (edge values, broadcasting shapes) and the
attribute variants to run. `TORCH` is the independent torch formula for each op, called with the
same operands and attributes as the op's numpy reference. Expected values always come from torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shipei.ir.errors import ShipeiError
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.interpreter import interpret
from shipei.ir.registry import FusionKind, all_ops
from shipei.ir.types import DType, Sym, TensorType, dim_mul

F64_RTOL, F64_ATOL = 1e-10, 1e-12
TORCH_DTYPES = {DType.f16: torch.float16, DType.bf16: torch.bfloat16, DType.f32: torch.float32,
                DType.f64: torch.float64, DType.i32: torch.int32, DType.i64: torch.int64, DType.bool: torch.bool}
END = 2**62  # slice's "to the end" stop


# --- the torch side: one formula per op, called like the op's numpy reference ----------------

def _dims(x: torch.Tensor, axes: tuple[int, ...] | None) -> tuple[int, ...]:
    return tuple(range(x.ndim)) if axes is None else tuple(axes)


def _slice(x: torch.Tensor, axes, starts, stops, steps) -> torch.Tensor:
    index = [slice(None)] * x.ndim
    for axis, start, stop, step in zip(axes, starts, stops, steps, strict=True):
        index[axis] = slice(start, stop, step)
    return x[tuple(index)]


def _gather(x: torch.Tensor, idx: torch.Tensor, axis: int) -> torch.Tensor:
    axis %= x.ndim
    picked = x.index_select(axis, idx.flatten().long())
    return picked.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def _pad(x: torch.Tensor, pads, value: float) -> torch.Tensor:
    # shipei: (before, after) per dim from the first; F.pad: per dim from the last.
    pairs = [pads[2 * i: 2 * i + 2] for i in range(x.ndim)]
    return F.pad(x, [p for pair in reversed(pairs) for p in pair], value=value)


def _batch_norm_train(x, mean, var, w, b, eps: float, momentum: float) -> tuple[torch.Tensor, ...]:
    """torch's batch norm in train mode, which updates the running statistics it is given."""
    mean, var = mean.clone(), var.clone()
    return F.batch_norm(x, mean, var, w, b, training=True, momentum=momentum, eps=eps), mean, var


TORCH: dict[str, Callable[..., Any]] = {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh, "erf": torch.erf,
    "floor": torch.floor, "sigmoid": torch.sigmoid, "relu": F.relu, "silu": F.silu,
    "logical_not": torch.logical_not,
    "gelu": lambda x, approximate: F.gelu(x, approximate=approximate),
    "dropout": lambda x, p: F.dropout(x, p, training=False),
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum,
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or,
    "where": torch.where,
    "cast": lambda x, dtype: x.to(TORCH_DTYPES[dtype]),
    "matmul": torch.matmul,
    "linear": F.linear,
    "attention": lambda q, k, v, scale, causal: F.scaled_dot_product_attention(q, k, v, scale=scale,
                                                                               is_causal=causal),
    "conv2d": lambda x, w, stride, padding, dilation, groups: F.conv2d(x, w, None, stride, padding, dilation, groups),
    "max_pool2d": lambda x, kernel, stride, padding: F.max_pool2d(x, kernel, stride, padding),
    "avg_pool2d": lambda x, kernel, stride, padding, count_include_pad: F.avg_pool2d(
        x, kernel, stride, padding, count_include_pad=count_include_pad),
    "reduce_sum": lambda x, axes, keepdims: torch.sum(x, _dims(x, axes), keepdim=keepdims),
    "reduce_mean": lambda x, axes, keepdims: torch.mean(x, _dims(x, axes), keepdim=keepdims),
    "reduce_max": lambda x, axes, keepdims: torch.amax(x, _dims(x, axes), keepdim=keepdims),
    "reduce_min": lambda x, axes, keepdims: torch.amin(x, _dims(x, axes), keepdim=keepdims),
    "softmax": lambda x, axis: F.softmax(x, dim=axis),
    "log_softmax": lambda x, axis: F.log_softmax(x, dim=axis),
    "layer_norm": lambda x, w, b, eps: F.layer_norm(x, w.shape, w, b, eps),
    "cross_entropy": lambda x, y, label_smoothing: F.cross_entropy(x, y, label_smoothing=label_smoothing),
    "batch_norm_train": _batch_norm_train,
    "mse_loss": F.mse_loss,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
    "batch_norm": lambda x, mean, var, w, b, eps: F.batch_norm(x, mean, var, w, b, training=False, eps=eps),
    "reshape": lambda x, shape: x.reshape(shape),
    "transpose": lambda x, perm: x.permute(perm),
    "broadcast_to": lambda x, shape: torch.broadcast_to(x, shape),
    "concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "split": lambda x, sizes, axis: torch.split(x, list(sizes), dim=axis),
    "slice": _slice,
    "gather": _gather,
    "pad": _pad,
    "constant": lambda value, dtype: torch.tensor(value, dtype=TORCH_DTYPES[dtype]),
    "iota": lambda length, dtype: torch.arange(length, dtype=TORCH_DTYPES[dtype]),
    "transfer": lambda x: x.clone(),
}


# --- the cases: inputs and attribute variants per op ---------------------------------------------

RNG = np.random.default_rng(20240601)


def normal(*shape: int, scale: float = 1.0, edges: tuple[float, ...] = ()) -> np.ndarray:
    """f32 normal samples with `edges` written over the first elements."""
    x = (RNG.standard_normal(shape) * scale).astype(np.float32)
    x.flat[:len(edges)] = edges
    return x


def uniform(*shape: int, low: float, high: float, edges: tuple[float, ...] = ()) -> np.ndarray:
    x = RNG.uniform(low, high, shape).astype(np.float32)
    x.flat[:len(edges)] = edges
    return x


def ints(*shape: int, low: int = -5, high: int = 6, dtype=np.int32) -> np.ndarray:
    return RNG.integers(low, high, shape).astype(dtype)


def bools(*shape: int) -> np.ndarray:
    return RNG.random(shape) < 0.5


@dataclass(frozen=True)
class Case:
    """Graph inputs by name, and the calls to make: (operand names, attributes) per node."""

    inputs: dict[str, np.ndarray]
    calls: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)


def case(*operands: np.ndarray, variants: tuple[dict[str, Any], ...] = ({},)) -> Case:
    """Every variant applied to the same operands, in order."""
    names = tuple(f"in{i}" for i in range(len(operands)))
    return Case(dict(zip(names, operands, strict=True)), [(names, attrs) for attrs in variants])


SIGNED = (-100.0, -3.5, -1.0, -0.5, -0.0, 0.0, 1e-3, 0.5, 1.0, 3.5, 100.0)
HUGE = (-1000.0, 1000.0, -30.0, 30.0, 0.0)
POSITIVE = (1e-3, 0.5, 1.0, 2.0, 1e3)
LHS, RHS = (3, 1, 4), (2, 4)  # broadcast to [3, 2, 4]
REDUCE_AXES = ({"axes": None}, {"axes": (-1,), "keepdims": True}, {"axes": (0, -1)}, {"axes": (1,)},
               {"axes": None, "keepdims": True})
ties = normal(*RHS).round()  # small integers, so comparisons see equal elements

CASES: dict[str, Case] = {
    "neg": case(ints(3, 4, dtype=np.int64)),
    "abs": case(ints(3, 4)),
    "relu": case(ints(3, 4)),
    "exp": case(normal(3, 5, scale=3, edges=(-100.0, 80.0, -0.0, 0.0))),
    "log": case(uniform(3, 5, low=1e-3, high=50, edges=POSITIVE)),
    "sqrt": case(uniform(3, 5, low=0, high=50, edges=(0.0,) + POSITIVE)),
    "rsqrt": case(uniform(3, 5, low=1e-3, high=50, edges=POSITIVE)),
    "sin": case(normal(3, 5, scale=3, edges=SIGNED)),
    "cos": case(normal(3, 5, scale=3, edges=SIGNED)),
    "tanh": case(normal(4, 5, scale=3, edges=SIGNED + HUGE)),
    "erf": case(normal(3, 5, scale=2, edges=SIGNED)),
    "floor": case(normal(3, 5, scale=3, edges=SIGNED + (-2.0, 2.0, -1.5, 1.5))),
    "sigmoid": case(normal(4, 5, scale=3, edges=SIGNED + (-800.0, 800.0, -700.0, 700.0, -40.0, 40.0))),
    "silu": case(normal(3, 5, scale=3, edges=SIGNED + (-800.0, 800.0))),
    "gelu": case(normal(4, 5, scale=3, edges=SIGNED + HUGE),
                 variants=({}, {"approximate": "tanh"}, {"approximate": "none"})),
    "dropout": case(normal(3, 4), variants=({"p": 0.3}, {})),
    "logical_not": case(bools(3, 4)),
    "add": case(normal(*LHS, scale=1e3, edges=SIGNED), normal(*RHS, edges=(0.0, -0.0))),
    "sub": case(ints(*LHS), ints(*RHS)),
    "mul": case(normal(*LHS, edges=SIGNED), normal(*RHS, scale=1e3)),
    "div": case(normal(*LHS, edges=SIGNED), uniform(*RHS, low=0.1, high=3, edges=(-0.1, -2.0, -3.0, -0.5))),
    "pow": case(uniform(*LHS, low=0.1, high=5, edges=(1.0, 0.5, 2.0)), normal(*RHS, scale=2, edges=(0.0, -1.0, 0.5))),
    "maximum": case(ints(*LHS, dtype=np.int64), ints(*RHS, dtype=np.int64)),
    "minimum": case(normal(*LHS, edges=SIGNED), normal(*RHS)),
    "eq": case(ints(*LHS, low=-1, high=2, dtype=np.int64), ints(*RHS, low=-1, high=2, dtype=np.int64)),
    "ne": case(bools(*LHS), bools(*RHS)),
    "lt": case(normal(*LHS).round(), ties),
    "le": case(normal(*LHS).round(), ties),
    "gt": case(normal(*LHS).round(), ties),
    "ge": case(normal(*LHS).round(), ties),
    "logical_and": case(bools(*LHS), bools(*RHS)),
    "logical_or": case(bools(*LHS), bools(*RHS)),
    "where": case(bools(*LHS), normal(*RHS), normal(4)),
    "cast": case(normal(3, 5, scale=1e3, edges=(-2.7, -2.5, -0.5, -0.0, 0.0, 0.3, 1.999, 2.5, -1e6, 1e6, 65519.0)),
                 variants=({"dtype": "i32"}, {"dtype": "i64"}, {"dtype": "bool"}, {"dtype": "f16"})),
    "matmul": case(normal(2, 1, 3, 4, scale=3), normal(3, 4, 5)),
    "linear": Case({"x": normal(2, 3, 4, scale=3), "w": normal(5, 4), "b": normal(5)}, [
        (("x", "w", "b"), {}), (("x", "w"), {})]),
    "attention": Case({"q": normal(2, 3, 4, 8, scale=2), "k": normal(2, 3, 6, 8, scale=2), "v": normal(2, 3, 6, 5),
                       "q2": normal(2, 3, 6, 8)}, [
        (("q", "k", "v"), {"scale": 0.35}), (("q", "k", "v"), {"scale": 1.0, "causal": True}),
        (("q2", "k", "v"), {"scale": 0.5, "causal": True})]),
    "conv2d": Case({"x": normal(2, 4, 9, 8), "w": normal(6, 4, 3, 3), "wg": normal(6, 2, 3, 2)}, [
        (("x", "w"), {}),
        (("x", "w"), {"stride": 2, "padding": 1}),
        (("x", "w"), {"dilation": 2, "padding": (1, 2)}),
        (("x", "wg"), {"groups": 2}),
        (("x", "wg"), {"groups": 2, "stride": (2, 1), "padding": 1, "dilation": (2, 1)}),
    ]),
    "max_pool2d": case(normal(2, 3, 7, 8, edges=(-100.0,) * 8), variants=(
        {"kernel": 2, "stride": 2}, {"kernel": 3, "stride": 2, "padding": 1},
        {"kernel": (2, 3), "stride": (1, 2), "padding": (1, 1)})),
    "avg_pool2d": case(normal(2, 3, 7, 8), variants=(
        {"kernel": 2, "stride": 2}, {"kernel": 3, "stride": 2, "padding": 1},
        {"kernel": 3, "stride": 2, "padding": 1, "count_include_pad": False},
        {"kernel": (2, 3), "stride": (1, 2), "padding": (1, 1), "count_include_pad": False})),
    "reduce_sum": case(ints(3, 4, 5), variants=REDUCE_AXES),
    "reduce_mean": case(normal(3, 4, 5, scale=10), variants=REDUCE_AXES),
    "reduce_max": case(ints(3, 4, 5, dtype=np.int64), variants=REDUCE_AXES),
    "reduce_min": case(normal(3, 4, 5, edges=SIGNED), variants=REDUCE_AXES),
    "softmax": case(normal(2, 3, 5, scale=3, edges=HUGE), variants=({}, {"axis": 1}, {"axis": 0})),
    "log_softmax": case(normal(2, 3, 5, scale=3, edges=HUGE), variants=({}, {"axis": -2}, {"axis": 0})),
    "layer_norm": Case({"x": normal(2, 3, 4, 5, scale=5), "w2": normal(4, 5), "b2": normal(4, 5),
                        "w1": normal(5), "b1": normal(5)}, [
        (("x", "w2", "b2"), {}), (("x", "w2", "b2"), {"eps": 1e-2}), (("x", "w1", "b1"), {})]),
    "batch_norm": case(normal(2, 3, 4, 5, scale=3), normal(3), uniform(3, low=0.1, high=4), normal(3), normal(3),
                       variants=({}, {"eps": 1e-1})),
    "reshape": case(normal(2, 3, 4), variants=({"shape": (4, 6)}, {"shape": (24,)}, {"shape": (2, 12, 1)})),
    "transpose": case(normal(2, 3, 4), variants=({"perm": (2, 0, 1)}, {"perm": (1, 0, 2)}, {"perm": (0, 1, 2)})),
    "broadcast_to": case(normal(*LHS), variants=({"shape": (2, 3, 5, 4)}, {"shape": (3, 2, 4)})),
    "concat": case(normal(2, 1, 4), normal(2, 3, 4), normal(2, 2, 4), variants=({"axis": 1}, {"axis": -2})),
    "split": case(normal(7, 3), variants=({"sizes": (2, 4, 1)}, {"sizes": (1, 2), "axis": -1}, {"sizes": (7,)})),
    "slice": case(normal(5, 6, 7), variants=(
        {"axes": (1,), "starts": (-4,), "stops": (END,), "steps": (2,)},
        {"axes": (0, 2), "starts": (1, -5), "stops": (4, -1), "steps": (1, 2)},
        {"axes": (-1,), "starts": (2,), "stops": (100,), "steps": (3,)})),
    "gather": Case({"x": normal(3, 5, 2), "i2": ints(2, 3, low=0, high=5, dtype=np.int64),
                    "i1": ints(4, low=0, high=3)}, [
        (("x", "i2"), {"axis": 1}), (("x", "i1"), {}), (("x", "i2"), {"axis": -2})]),
    "pad": case(normal(2, 3, 4), variants=({"pads": (1, 2, 0, 3, 2, 0)}, {"pads": (0, 0, 1, 1, 0, 0), "value": -1.5})),
    "constant": case(variants=({"value": np.array([[1.5, -2.0], [0.1, 3e5]]), "dtype": "f32"},
                               {"value": np.array([3, -4, 0]), "dtype": "i32"},
                               {"value": np.array(2.5), "dtype": "f64"},
                               {"value": np.array([True, False]), "dtype": "bool"})),
    "iota": case(variants=({"length": 5}, {"length": 4, "dtype": "f32"}, {"length": 1, "dtype": "i32"})),
    "transfer": case(normal(2, 3)),
    "cross_entropy": Case({"x": normal(5, 4, scale=4), "y": ints(5, low=0, high=4, dtype=np.int64)}, [
        (("x", "y"), {}), (("x", "y"), {"label_smoothing": 0.2})]),
    "mse_loss": case(normal(3, 4, scale=3), normal(3, 4)),
    "batch_norm_train": case(normal(4, 3, 5, 5, scale=2), normal(3), np.abs(normal(3)) + 0.5, normal(3), normal(3),
                             variants=({}, {"momentum": 0.3, "eps": 1e-3})),
    "bce_with_logits": Case({"x": normal(3, 4, scale=6, edges=(40.0, -40.0)),
                             "t": RNG.random((3, 4)).astype(np.float32)}, [(("x", "t"), {})]),
}


# --- running a case on both sides ----------------------------------------------------------------

def build(op: str, c: Case, dtype: DType | None = None) -> tuple[Graph, list[np.ndarray]]:
    """The case as a graph whose outputs are every result of every call; float inputs get `dtype`."""
    g = Graph(op)
    b = Builder(g)
    inputs, values = [], {}
    for name, array in c.inputs.items():
        if dtype is not None and array.dtype.kind == "f":
            array = array.astype(dtype.numpy)
        inputs.append(array)
        values[name] = b.input(name, TensorType(DType.of_numpy(array.dtype), array.shape))
    for names, attrs in c.calls:
        g.outputs += b.op(op, *(values[n] for n in names), **attrs)
    return g, inputs


def to_torch(array: np.ndarray, dtype: DType | None = None) -> torch.Tensor:
    """A torch tensor of the array; floats become `dtype` (bf16 travels through f32, exactly)."""
    t = torch.from_numpy(np.asarray(array, np.float32 if array.dtype.name == "bfloat16" else None))
    return t.to(TORCH_DTYPES[dtype]) if dtype is not None and t.is_floating_point() else t


def torch_expected(op: str, g: Graph, inputs: list[np.ndarray], float_dtype: DType) -> list[torch.Tensor]:
    """Every output of `build`'s graph, computed by torch from the same inputs and attributes."""
    tensors = {v: to_torch(a, float_dtype) for v, a in zip(g.inputs, inputs, strict=True)}
    out = []
    for node in g.nodes:
        result = TORCH[op](*(tensors[v] for v in node.operands), **node.attrs)
        out += list(result) if isinstance(result, (tuple, list)) else [result]
    return out


def assert_same(actual: np.ndarray, expected: torch.Tensor, declared: TensorType, **tol: float) -> None:
    """Shape, dtype and values; floats within `tol` (torch.testing's dtype defaults when empty)."""
    assert actual.shape == tuple(expected.shape) == declared.shape
    if not declared.dtype.is_float:
        assert actual.dtype == declared.dtype.numpy
        np.testing.assert_array_equal(actual, expected.numpy())
        return
    torch.testing.assert_close(to_torch(actual, None).to(expected.dtype), expected, equal_nan=True, **tol)


# --- 1. every op against torch in float64 --------------------------------------------------------

@pytest.mark.parametrize("op", sorted(all_ops()))
def test_op_matches_torch_in_f64(op: str) -> None:
    assert op in CASES and op in TORCH, f"op '{op}' needs a row in CASES and TORCH"
    g, inputs = build(op, CASES[op])
    actual = interpret(g, inputs, {}, precision="f64")
    expected = torch_expected(op, g, inputs, DType.f64)
    for a, e, v in zip(actual, expected, g.outputs, strict=True):
        if v.dtype.is_float:
            assert a.dtype == np.float64  # "f64" carries every float in float64
            e = e.double()
        assert_same(a, e, v.type, rtol=F64_RTOL, atol=F64_ATOL)


def test_tables_name_only_registered_ops() -> None:
    assert set(CASES) <= set(all_ops()) and set(TORCH) <= set(all_ops())


# --- 2. declared precision in f16 and bf16 ------------------------------------------------------

@pytest.mark.parametrize("dtype", [DType.f16, DType.bf16], ids=str)
@pytest.mark.parametrize("op", ["add", "mul", "matmul", "exp", "sigmoid", "gelu", "softmax", "layer_norm",
                                "reduce_sum"])
def test_declared_low_precision_matches_torch(op: str, dtype: DType) -> None:
    c = CASES[op]
    if op == "reduce_sum":  # the table's case is integer; reuse its variants on floats
        c = case(normal(3, 4, 5), variants=REDUCE_AXES)
    g, inputs = build(op, c, dtype)
    actual = interpret(g, inputs, {}, precision="declared")
    expected = torch_expected(op, g, inputs, dtype)
    for a, e, v in zip(actual, expected, g.outputs, strict=True):
        assert a.dtype == dtype.numpy
        assert e.dtype == TORCH_DTYPES[dtype]
        assert_same(a, e, v.type)  # torch.testing's default tolerance for the dtype


# --- 3. interpreter-level behaviour --------------------------------------------------------------

B = Sym.named("B")
F32 = DType.f32


def graph_with(*inputs: tuple[str, TensorType]) -> tuple[Graph, Builder, list]:
    g = Graph("g")
    b = Builder(g)
    return g, b, [b.input(name, t) for name, t in inputs]


@pytest.mark.parametrize("batch", [3, 5])
def test_symbolic_dims_bind_from_inputs(batch: int) -> None:
    g, b, (x,) = graph_with(("x", TensorType(F32, (B, 4))))
    idx = b("iota", length=B)
    row = b("reduce_sum", x, axes=(1,))
    g.outputs = [idx, b("add", row, b("cast", idx, dtype="f32")), b("broadcast_to", row, shape=(2, B))]
    xs = normal(batch, 4)
    idx_out, sum_out, wide_out = interpret(g, [xs], {})
    t = torch.from_numpy(xs)
    np.testing.assert_array_equal(idx_out, torch.arange(batch).numpy())
    assert idx_out.dtype == np.int64
    torch.testing.assert_close(torch.from_numpy(sum_out), t.sum(1) + torch.arange(batch))
    torch.testing.assert_close(torch.from_numpy(wide_out), t.sum(1).expand(2, batch))


@pytest.mark.parametrize("shape", [(2, 4), (3,), (3, 4, 1)])
def test_wrong_input_shape_names_the_input(shape: tuple[int, ...]) -> None:
    g, b, (x, y) = graph_with(("x", TensorType(F32, (3, 4))), ("y", TensorType(F32, (4,))))
    g.outputs = [b("add", x, y)]
    with pytest.raises(ShipeiError, match="input 'x'"):
        interpret(g, [np.zeros(shape, np.float32), np.zeros(4, np.float32)], {})


def test_inconsistent_symbol_bindings_are_refused() -> None:
    g, b, (x, y) = graph_with(("x", TensorType(F32, (B, 4))), ("y", TensorType(F32, (B,))))
    g.outputs = [b("add", b("reduce_sum", x, axes=(1,)), y)]
    with pytest.raises(ShipeiError, match="'y'.*symbol B"):
        interpret(g, [np.zeros((3, 4), np.float32), np.zeros(4, np.float32)], {})


def test_wrong_number_of_inputs_is_refused() -> None:
    g, b, (x,) = graph_with(("x", TensorType(F32, (2,))))
    g.outputs = [b("exp", x)]
    with pytest.raises(ShipeiError, match="takes 1 inputs"):
        interpret(g, [], {})


def test_extra_inputs_are_refused() -> None:
    g, b, (x,) = graph_with(("x", TensorType(F32, (2,))))
    g.outputs = [b("exp", x)]
    with pytest.raises(ShipeiError, match="takes 1 inputs"):
        interpret(g, [np.zeros(2, np.float32), np.zeros(3, np.float32)], {})


def test_symbol_used_only_in_a_compound_dim_is_bound_or_refused() -> None:
    g, b, (x,) = graph_with(("x", TensorType(F32, (dim_mul(2, B),))))
    g.outputs = [b("exp", x)]
    try:
        (out,) = interpret(g, [np.zeros(4, np.float32)], {})
    except ShipeiError:
        return
    np.testing.assert_array_equal(out, np.ones(4, np.float32))


def test_symbol_bound_by_no_input_is_refused() -> None:
    g, b, _ = graph_with()
    g.outputs = [b("iota", length=B)]
    with pytest.raises(ShipeiError, match="B"):
        interpret(g, [], {})


def graph_with_param() -> Graph:
    g, b, (x,) = graph_with(("x", TensorType(F32, (2, 3))))
    w = b.add_param("fc.weight", TensorType(F32, (3, 4)), Init("zeros"))
    g.outputs = [b("matmul", x, w)]
    return g


def test_params_are_read_from_weights() -> None:
    x, w = normal(2, 3), normal(3, 4)
    (out,) = interpret(graph_with_param(), [x], {"fc.weight": w}, precision="f64")
    torch.testing.assert_close(torch.from_numpy(out), torch.from_numpy(x).double() @ torch.from_numpy(w).double(),
                               rtol=F64_RTOL, atol=F64_ATOL)


def test_missing_weight_is_refused() -> None:
    with pytest.raises(ShipeiError, match="'fc.weight'"):
        interpret(graph_with_param(), [normal(2, 3)], {})


def test_weight_shape_mismatch_is_refused() -> None:
    with pytest.raises(ShipeiError, match=r"weight 'fc.weight'.*\[4, 3\]"):
        interpret(graph_with_param(), [normal(2, 3)], {"fc.weight": normal(4, 3)})


def test_float_input_for_integer_input_is_refused() -> None:
    g, b, (x, idx) = graph_with(("x", TensorType(F32, (5,))), ("idx", TensorType(DType.i64, (3,))))
    g.outputs = [b("gather", x, idx)]
    with pytest.raises(ShipeiError, match="input 'idx'.*i64"):
        interpret(g, [normal(5), np.array([0.0, 1.0, 2.0])], {})
    (out,) = interpret(g, [normal(5), np.array([0, 1, 2], np.int32)], {})  # widening ints is fine
    assert out.shape == (3,)


# --- 4. random elementwise chains ----------------------------------------------------------------

def _float_elementwise(name: str) -> bool:
    """Ops that map same-shaped floats to the same type: the ones a float chain can use.

    floor is left out: a discontinuity turns a one-ulp libm difference upstream into a jump of 1.
    """
    d = all_ops()[name]
    if d.fusion not in (FusionKind.ELEMWISE, FusionKind.BROADCAST) or d.variadic or name == "floor":
        return False
    if any(a.required for a in d.attrs.values()):
        return False
    t = TensorType(F32, (2, 4))
    try:
        return d.type_rule([t] * len(d.operands), d.complete_attrs({})) == [t]
    except ShipeiError:
        return False


CHAIN_OPS = sorted(filter(_float_elementwise, all_ops()))
CHAIN_SHAPES = [LHS, RHS, (4,)]


def test_chain_ops_cover_unary_and_binary() -> None:
    assert {"exp", "gelu", "add", "pow", "maximum"} <= set(CHAIN_OPS)
    assert not {"eq", "where", "cast", "batch_norm", "logical_and"} & set(CHAIN_OPS)


@st.composite
def chains(draw) -> tuple[list[np.ndarray], list[tuple[str, list[int]]]]:
    """Positive inputs of broadcasting shapes, and 1-6 (op, operand indices) steps over them."""
    positive = st.floats(0.5, 2.0, width=32)
    inputs = [draw(arrays(np.float32, s, elements=positive)) for s in CHAIN_SHAPES]
    steps = []
    for n in range(draw(st.integers(1, 6))):
        name = draw(st.sampled_from(CHAIN_OPS))
        pick = st.integers(0, len(inputs) + n - 1)
        steps.append((name, [draw(pick) for _ in all_ops()[name].operands]))
    return inputs, steps


@settings(max_examples=30, deadline=None)
@given(chains())
def test_elementwise_chain_matches_torch(chain) -> None:
    inputs, steps = chain
    g, b, values = graph_with(*((f"x{i}", TensorType(F32, s)) for i, s in enumerate(CHAIN_SHAPES)))
    tensors = [to_torch(a, DType.f64) for a in inputs]
    for name, picks in steps:
        values.append(b(name, *(values[i] for i in picks)))
        tensors.append(TORCH[name](*(tensors[i] for i in picks), **g.nodes[-1].attrs))
    g.outputs = values[len(inputs):]
    actual = interpret(g, inputs, {}, precision="f64")
    for a, e, v in zip(actual, tensors[len(inputs):], g.outputs, strict=True):
        assert_same(a, e, v.type, rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.parametrize("op", CHAIN_OPS)
def test_elementwise_op_on_rank0_matches_torch(op: str) -> None:
    operands = [np.array(0.75 + i, np.float32) for i in range(len(all_ops()[op].operands))]
    g, inputs = build(op, case(*operands))
    (actual,) = interpret(g, inputs, {}, precision="f64")
    (expected,) = torch_expected(op, g, inputs, DType.f64)
    assert_same(actual, expected, g.outputs[0].type, rtol=F64_RTOL, atol=F64_ATOL)
