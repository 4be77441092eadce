"""Reductions over axes, and the normalizations built on them (softmax, layer/batch norm)."""

from __future__ import annotations

import numpy as np

from ..errors import ShipeiError
from ..registry import Attr, AttrKind, FusionKind, op
from ..types import TensorType, normalize_axis
from .rules import FLOATS, NUMERIC, check_dtype, per_element, reduce_shape, same_dtype

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
    op(_name, ["x"], FusionKind.REDUCTION, _reduce_rule(_allowed), _reducer(_fn), attrs=dict(_AXES))


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


# max, subtract, exp, sum, divide (log_softmax: log and subtract instead of the divide)
op("softmax", ["x"], FusionKind.OPAQUE, _axis_rule, _softmax, attrs={"axis": Attr(AttrKind.INT, -1)},
   flops=per_element(5))
op("log_softmax", ["x"], FusionKind.OPAQUE, _axis_rule, _log_softmax, attrs={"axis": Attr(AttrKind.INT, -1)},
   flops=per_element(6))


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


# mean, subtract, square, mean, then normalize, scale and shift
op("layer_norm", ["x", "weight", "bias"], FusionKind.OPAQUE, _layer_norm_rule, _layer_norm, flops=per_element(8),
   attrs={"eps": Attr(AttrKind.FLOAT, 1e-5)}, doc="Normalizes over the trailing dims that weight covers.")


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


op("batch_norm", ["x", "mean", "var", "weight", "bias"], FusionKind.BROADCAST, _batch_norm_rule, _batch_norm,
   attrs={"eps": Attr(AttrKind.FLOAT, 1e-5)}, doc="Inference form: running statistics, channel axis 1.")
