"""Reductions over axes, and the normalizations built on them (softmax, layer/batch norm)."""

from __future__ import annotations

import numpy as np

from ..errors import ShipeiError
from ..registry import Attr, AttrKind, FusionKind, Sample, Spelling, op
from ..types import DType, TensorType, normalize_axis
from .rules import (
    FLOATS,
    NUMERIC,
    check_dtype,
    mixes_axes_attr,
    mixes_axis_attr,
    per_element,
    reduce_shape,
    same_dtype,
    scalar,
)

_AXES = {"axes": Attr(AttrKind.OPT_INTS, None), "keepdims": Attr(AttrKind.BOOL, False)}


def _reduce_rule(allowed):
    def rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
        check_dtype(types[0], allowed)
        return [reduce_shape(types[0], attrs["axes"], attrs["keepdims"])]

    return rule


def _reducer(fn):
    def ref(x: np.ndarray, axes, keepdims: bool) -> np.ndarray:
        return np.asarray(fn(x, axis=None if axes is None else tuple(axes), keepdims=keepdims)).astype(x.dtype)

    return ref


for _name, _fn, _allowed in [("reduce_sum", np.sum, NUMERIC), ("reduce_mean", np.mean, FLOATS),
                             ("reduce_max", np.max, NUMERIC), ("reduce_min", np.min, NUMERIC)]:
    op(_name, ["x"], FusionKind.REDUCTION, _reduce_rule(_allowed), _reducer(_fn), attrs=dict(_AXES),
       mixes=mixes_axes_attr, dsl=Spelling(function=_name.removeprefix("reduce_"),
                                           keywords={"axes": "axis", "keepdims": "keepdim"}),
       samples=[Sample(((2, 3, 4),), {"axes": (1,)}), Sample(((2, 3, 4),), {"axes": (-1, 0), "keepdims": True}),
                Sample(((3, 4),), {"axes": None})])


def _axis_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    check_dtype(types[0], FLOATS)
    normalize_axis(attrs["axis"], types[0].rank)
    return [types[0]]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _shifted(b, x, axis: int):
    """x less its maximum along `axis`: exp of it cannot overflow."""
    return b("sub", x, b("reduce_max", x, axes=(axis,), keepdims=True))


def _softmax_decomposition(b, operands, attrs):
    e = b("exp", _shifted(b, operands[0], attrs["axis"]))
    return [b("div", e, b("reduce_sum", e, axes=(attrs["axis"],), keepdims=True))]


def _log_softmax_decomposition(b, operands, attrs):
    shifted = _shifted(b, operands[0], attrs["axis"])
    return [b("sub", shifted, b("log", b("reduce_sum", b("exp", shifted), axes=(attrs["axis"],), keepdims=True)))]


# max, subtract, exp, sum, divide (log_softmax: log and subtract instead of the divide)
op("softmax", ["x"], FusionKind.OPAQUE, _axis_rule, _softmax, attrs={"axis": Attr(AttrKind.INT, -1)},
   flops=per_element(5), mixes=mixes_axis_attr, decomposition=_softmax_decomposition,
   samples=[Sample(((2, 5),), {"axis": -1}), Sample(((2, 3, 4),), {"axis": 1})])
op("log_softmax", ["x"], FusionKind.OPAQUE, _axis_rule, _log_softmax, attrs={"axis": Attr(AttrKind.INT, -1)},
   flops=per_element(6), mixes=mixes_axis_attr, decomposition=_log_softmax_decomposition,
   samples=[Sample(((2, 5),), {"axis": -1}), Sample(((2, 3, 4),), {"axis": 0})])


def _check_eps(attrs: dict) -> None:
    if not attrs["eps"] >= 0:
        raise ShipeiError(f"eps must be non-negative, got {attrs['eps']}")


def _layer_norm_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    _check_eps(attrs)
    x, w, b = types
    same_dtype(types)
    check_dtype(x, FLOATS)
    if w.shape != b.shape or tuple(x.shape[x.rank - w.rank:]) != w.shape or w.rank > x.rank:
        raise ShipeiError(f"layer_norm over {w} cannot normalize the trailing dims of {x}")
    return [x]


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    axes = tuple(range(x.ndim - w.ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _layer_norm_decomposition(b, operands, attrs):
    x, w, bias = operands
    axes = tuple(range(x.type.rank - w.type.rank, x.type.rank))
    centered = b("sub", x, b("reduce_mean", x, axes=axes, keepdims=True))
    var = b("reduce_mean", b("mul", centered, centered), axes=axes, keepdims=True)
    normalized = b("div", centered, b("sqrt", b("add", var, scalar(b, attrs["eps"], x))))
    return [b("add", b("mul", normalized, w), bias)]


# mean, subtract, square, mean, then normalize, scale and shift
op("layer_norm", ["x", "weight", "bias"], FusionKind.OPAQUE, _layer_norm_rule, _layer_norm, flops=per_element(8),
   attrs={"eps": Attr(AttrKind.FLOAT, 1e-5)}, doc="Normalizes over the trailing dims that weight covers.",
   decomposition=_layer_norm_decomposition,
   mixes=lambda node, batch: [tuple(range(node.operands[0].type.rank - node.operands[1].type.rank,
                                          node.operands[0].type.rank)), (), ()],
   samples=[Sample(((2, 3, 8), (8,), (8,)), {"eps": 1e-5}), Sample(((2, 3, 4), (3, 4), (3, 4)))])


def _batch_norm_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    _check_eps(attrs)
    x = types[0]
    same_dtype(types)
    check_dtype(x, FLOATS)
    if x.rank < 2 or any(t.shape != (x.shape[1],) for t in types[1:]):
        raise ShipeiError(f"batch_norm needs per-channel [C] statistics for {x}, got "
                          + ", ".join(str(t) for t in types[1:]))
    return [x]


def _batch_norm(x, mean, var, w, b, eps: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)


def _batch_norm_decomposition(b, operands, attrs):
    x, mean, var, w, bias = operands
    channels = (1, x.shape[1]) + (1,) * (x.type.rank - 2)  # [C] statistics against axis 1
    mean, var, w, bias = (b("reshape", v, shape=channels) for v in (mean, var, w, bias))
    normalized = b("div", b("sub", x, mean), b("sqrt", b("add", var, scalar(b, attrs["eps"], x))))
    return [b("add", b("mul", normalized, w), bias)]


op("batch_norm", ["x", "mean", "var", "weight", "bias"], FusionKind.BROADCAST, _batch_norm_rule, _batch_norm,
   attrs={"eps": Attr(AttrKind.FLOAT, 1e-5)}, doc="Inference form: running statistics, channel axis 1.",
   domains={"var": "positive"}, decomposition=_batch_norm_decomposition,
   samples=[Sample(((2, 3, 4, 4), (3,), (3,), (3,), (3,))), Sample(((4, 3), (3,), (3,), (3,), (3,))),
            Sample(((2, 3, 5), (3,), (3,), (3,), (3,)))])


def _batch_norm_train_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    (x,) = _batch_norm_rule(types, attrs)
    # Batch statistics in 16 bits lose the running ones; autocast keeps batch norm in f32 too.
    check_dtype(x, {DType.f32, DType.f64})
    if not 0.0 <= attrs["momentum"] <= 1.0:
        raise ShipeiError(f"batch norm momentum must be in [0, 1], got {attrs['momentum']}")
    return [x, types[1], types[2]]


def _stat_axes(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank))


def _batch_norm_train(x, mean, var, w, b, eps: float, momentum: float):
    axes = _stat_axes(x.ndim)
    batch_mean, batch_var = x.mean(axis=axes), x.var(axis=axes)
    n = x.size // x.shape[1]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - batch_mean.reshape(shape)) / np.sqrt(batch_var.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)
    unbiased = batch_var * n / max(n - 1, 1)
    return (y.astype(x.dtype), ((1 - momentum) * mean + momentum * batch_mean).astype(mean.dtype),
            ((1 - momentum) * var + momentum * unbiased).astype(var.dtype))


def _batch_norm_train_decomposition(b, operands, attrs):
    """Normalize by the batch's statistics; blend them into the running ones (the variance's
    unbiased estimate, as torch's BatchNorm does)."""
    x, mean, var, w, bias = operands
    axes, channels = _stat_axes(x.type.rank), (1, x.shape[1]) + (1,) * (x.type.rank - 2)
    batch_mean = b("reduce_mean", x, axes=axes, keepdims=True)
    centered = b("sub", x, batch_mean)
    batch_var = b("reduce_mean", b("mul", centered, centered), axes=axes, keepdims=True)
    scale = b("div", b("reshape", w, shape=channels), b("sqrt", b("add", batch_var, scalar(b, attrs["eps"], x))))
    y = b("add", b("mul", centered, scale), b("reshape", bias, shape=channels))
    n = b("reduce_sum", b("add", b("mul", x, scalar(b, 0.0, x)), scalar(b, 1.0, x)), axes=axes)  # per channel
    unbiased = b("div", b("mul", b("reshape", batch_var, shape=(x.shape[1],)), n),
                 b("maximum", b("sub", n, scalar(b, 1.0, x)), scalar(b, 1.0, x)))
    m = attrs["momentum"]
    new_mean = b("add", b("mul", mean, scalar(b, 1 - m, x)),
                 b("mul", b("reshape", batch_mean, shape=(x.shape[1],)), scalar(b, m, x)))
    new_var = b("add", b("mul", var, scalar(b, 1 - m, x)), b("mul", unbiased, scalar(b, m, x)))
    return [y, new_mean, new_var]


op("batch_norm_train", ["x", "mean", "var", "weight", "bias"], FusionKind.OPAQUE, _batch_norm_train_rule,
   _batch_norm_train, attrs={"eps": Attr(AttrKind.FLOAT, 1e-5), "momentum": Attr(AttrKind.FLOAT, 0.1)},
   mixes=lambda node, batch: [tuple(range(node.operands[0].type.rank)), (), (), (), ()],
   decomposition=_batch_norm_train_decomposition, domains={"var": "positive"},
   samples=[Sample(((4, 3, 2, 2), (3,), (3,), (3,), (3,))), Sample(((5, 3), (3,), (3,), (3,), (3,)),
                                                                    {"momentum": 0.3})],
   doc="Training form of batch_norm: normalizes by the batch's statistics and gives the running "
       "statistics blended with them (torch's BatchNorm in train mode).")
