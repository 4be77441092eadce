"""Injective ops that move data without arithmetic, and the ops that create tensors."""

from __future__ import annotations

import numpy as np

from ..errors import ShipeiError
from ..registry import Attr, AttrKind, FusionKind, Sample, Spelling, op
from ..types import DType, TensorType, broadcast_shapes, dim_add, dim_product, format_dim, normalize_axis
from .rules import INTS, NUMERIC, batch_axes, check_dtype, mixes_axis_attr, mixes_nothing, same_dtype


def _fmt(shape) -> str:
    return "[" + ", ".join(format_dim(d) for d in shape) + "]"


def _reshape_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    (x,), shape = types, attrs["shape"]
    if dim_product(x.shape) != dim_product(shape):
        raise ShipeiError(f"cannot reshape {x} to {_fmt(shape)}: element counts differ")
    return [x.with_shape(shape)]


def _reshape_mixes(node, batch: str) -> list[tuple[int, ...]]:
    """A row-major reshape keeps rows apart only when the batch is the leading dim on both sides."""
    before, after = batch_axes(node.operands[0], batch), batch_axes(node.result, batch)
    return [() if before == after == (0,) or not before else tuple(range(node.operands[0].type.rank))]


op("reshape", ["x"], FusionKind.INJECTIVE, _reshape_rule, lambda x, shape: x.reshape(shape),
   attrs={"shape": Attr(AttrKind.DIMS)}, mixes=_reshape_mixes,
   samples=[Sample(((2, 3, 4),), {"shape": (6, 4)}), Sample(((2, 6),), {"shape": (3, 2, 2)})])


def _transpose_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    (x,), perm = types, attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        raise ShipeiError(f"perm {list(perm)} is not a permutation of the {x.rank} axes of {x}")
    return [x.with_shape([x.shape[p] for p in perm])]


op("transpose", ["x"], FusionKind.INJECTIVE, _transpose_rule, lambda x, perm: np.transpose(x, perm),
   attrs={"perm": Attr(AttrKind.INTS)}, mixes=mixes_nothing,
   samples=[Sample(((2, 3, 4),), {"perm": (2, 0, 1)}), Sample(((3, 4),), {"perm": (1, 0)})])


def _broadcast_to_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    (x,), shape = types, tuple(attrs["shape"])
    if broadcast_shapes(x.shape, shape) != shape:
        raise ShipeiError(f"cannot broadcast {x} to {_fmt(shape)}")
    return [x.with_shape(shape)]


op("broadcast_to", ["x"], FusionKind.BROADCAST, _broadcast_to_rule,
   lambda x, shape: np.broadcast_to(x, shape).copy(), attrs={"shape": Attr(AttrKind.DIMS)},
   samples=[Sample(((3, 1),), {"shape": (2, 3, 4)})])


def _concat_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    if not types:
        raise ShipeiError("needs at least one operand")
    dtype = same_dtype(types)
    first = types[0]
    axis = normalize_axis(attrs["axis"], first.rank)
    total = 0
    for t in types:
        if t.rank != first.rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis):
            raise ShipeiError(f"concat along axis {attrs['axis']}: {t} does not match {first}")
        total = dim_add(total, t.shape[axis])
    shape = list(first.shape)
    shape[axis] = total
    return [TensorType(dtype, tuple(shape))]


op("concat", ["*xs"], FusionKind.INJECTIVE, _concat_rule, lambda *xs, axis: np.concatenate(xs, axis=axis),
   attrs={"axis": Attr(AttrKind.INT, 0)}, mixes=mixes_axis_attr,
   samples=[Sample(((2, 3), (2, 1), (2, 2)), {"axis": 1}), Sample(((1, 3), (2, 3)), {"axis": 0})])


def _split_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    (x,), sizes = types, attrs["sizes"]
    axis = normalize_axis(attrs["axis"], x.rank)
    if x.shape[axis] != sum(sizes) or any(s <= 0 for s in sizes):
        raise ShipeiError(f"split sizes {list(sizes)} do not add up to dim {axis} of {x}")
    return [x.with_shape(x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


def _split(x: np.ndarray, sizes, axis: int) -> tuple[np.ndarray, ...]:
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


op("split", ["x"], FusionKind.INJECTIVE, _split_rule, _split,
   attrs={"sizes": Attr(AttrKind.INTS), "axis": Attr(AttrKind.INT, 0)}, mixes=mixes_nothing,
   dsl=Spelling(keywords={"sizes": "sections"}),
   samples=[Sample(((2, 6),), {"sizes": (1, 2, 3), "axis": 1}), Sample(((4, 3),), {"sizes": (2, 2), "axis": 0})])


def _slice_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    (x,) = types
    axes, starts, stops, steps = attrs["axes"], attrs["starts"], attrs["stops"], attrs["steps"]
    if not len(axes) == len(starts) == len(stops) == len(steps):
        raise ShipeiError("slice needs one start, stop and step per axis")
    shape = list(x.shape)
    for axis, start, stop, step in zip(axes, starts, stops, steps):
        axis = normalize_axis(axis, x.rank)
        dim = x.shape[axis]
        if not isinstance(dim, int):
            raise ShipeiError(f"cannot slice symbolic dim {format_dim(dim)} of {x}",
                              hint="slice only static dims, or the whole dim with ':'")
        if step <= 0:
            raise ShipeiError("slice steps must be positive", hint="reverse with a gather of descending indices")
        shape[axis] = len(range(*slice(start, stop, step).indices(dim)))
    return [x.with_shape(shape)]


def _slice(x: np.ndarray, axes, starts, stops, steps) -> np.ndarray:
    index = [slice(None)] * x.ndim
    for axis, start, stop, step in zip(axes, starts, stops, steps):
        index[axis] = slice(start, stop, step)
    return x[tuple(index)]


_BIG = 2**62  # stands for "to the end", so a slice's stop is always an int
op("slice", ["x"], FusionKind.INJECTIVE, _slice_rule, _slice,
   attrs={"axes": Attr(AttrKind.INTS), "starts": Attr(AttrKind.INTS), "stops": Attr(AttrKind.INTS),
          "steps": Attr(AttrKind.INTS)}, doc=f"Python slicing per axis; a stop of {_BIG} means the end.",
   mixes=mixes_nothing, dsl=Spelling(operator="[]"),
   samples=[Sample(((5, 6),), {"axes": (0, 1), "starts": (1, -4), "stops": (4, 6), "steps": (1, 2)}),
            Sample(((3, 4, 5),), {"axes": (2,), "starts": (0,), "stops": (_BIG,), "steps": (3,)})])


def _gather_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    x, idx = types
    check_dtype(idx, INTS, "indices")
    axis = normalize_axis(attrs["axis"], x.rank)
    return [x.with_shape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])]


def _gather(x: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[axis]):
        raise ShipeiError(f"gather index out of range [0, {x.shape[axis]}): min {idx.min()}, max {idx.max()}")
    return np.take(x, idx, axis=axis)


op("gather", ["x", "indices"], FusionKind.INJECTIVE, _gather_rule, _gather, attrs={"axis": Attr(AttrKind.INT, 0)},
   doc="numpy.take with indices in [0, n): embedding lookup is gather along axis 0.", mixes=mixes_nothing,
   indices={"indices": "axis"},
   samples=[Sample(((5, 3), (4,)), {"axis": 0}), Sample(((2, 5, 3), (2, 2)), {"axis": 1})])


def _pad_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    (x,), pads = types, attrs["pads"]
    if len(pads) != 2 * x.rank or any(p < 0 for p in pads):
        raise ShipeiError(f"pad needs {2 * x.rank} non-negative (before, after) amounts for {x}")
    return [x.with_shape([dim_add(d, pads[2 * i] + pads[2 * i + 1]) for i, d in enumerate(x.shape)])]


def _pad(x: np.ndarray, pads, value: float) -> np.ndarray:
    if x.ndim == 0:
        return x.copy()
    return np.pad(x, np.reshape(np.asarray(pads, dtype=np.int64), (x.ndim, 2)), constant_values=value)


def _pad_mixes(node, batch: str) -> list[tuple[int, ...]]:
    pads = node.attrs["pads"]
    return [tuple(i for i in range(node.operands[0].type.rank) if pads[2 * i] or pads[2 * i + 1])]


op("pad", ["x"], FusionKind.INJECTIVE, _pad_rule, _pad,
   attrs={"pads": Attr(AttrKind.INTS), "value": Attr(AttrKind.FLOAT, 0.0)}, mixes=_pad_mixes,
   samples=[Sample(((2, 3),), {"pads": (1, 0, 2, 1), "value": 0.0}),
            Sample(((2, 2, 2),), {"pads": (0, 0, 1, 1, 0, 2), "value": -1.5})])


def _constant_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    return [TensorType(attrs["dtype"], tuple(np.shape(attrs["value"])))]


op("constant", [], FusionKind.INJECTIVE, _constant_rule,
   lambda value, dtype: np.asarray(value, dtype=dtype.numpy),
   attrs={"value": Attr(AttrKind.ARRAY), "dtype": Attr(AttrKind.DTYPE)}, mixes=mixes_nothing,
   samples=[Sample((), {"value": np.array([[1.5, -2.0], [0.25, 3.0]])}), Sample((), {"value": np.array(0.5)})])


op("transfer", ["x"], FusionKind.OPAQUE, lambda types, attrs: [types[0]], lambda x: x, traits=("transfer",),
   flops=lambda operands, results, attrs: 0.0, mixes=mixes_nothing, dsl=None, samples=[Sample(((2, 3),))],
   doc="x, handed from its producer's placement to this node's: where one pipeline stage feeds another.")


def _iota_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    check_dtype(TensorType(attrs["dtype"], ()), NUMERIC, "iota dtype")
    return [TensorType(attrs["dtype"], (attrs["length"],))]


op("iota", [], FusionKind.INJECTIVE, _iota_rule, lambda length, dtype: np.arange(length, dtype=dtype.numpy),
   attrs={"length": Attr(AttrKind.DIM), "dtype": Attr(AttrKind.DTYPE, DType.i64)},
   doc="0, 1, ..., length-1; length may be symbolic.", mixes=mixes_nothing,
   dsl=Spelling(function="arange", keywords={"length": "n"}), samples=[Sample((), {"length": 5})])

