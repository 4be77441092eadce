"""Losses: what a model is trained to make small, averaged over the batch as torch's
`reduction="mean"` does. Each is a composite op with torch.nn.functional's meaning; a target
without a kernel of its own runs the decomposition.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShipeiError
from ..registry import Attr, AttrKind, FusionKind, Sample, op
from ..types import TensorType
from .rules import FLOATS, INTS, check_dtype, same_dtype, scalar


def _mixes_all(node, batch: str) -> list[tuple[int, ...]]:
    """A loss averages over every element of its operands, across the batch too."""
    return [tuple(range(v.type.rank)) for v in node.operands]


def _scalar(t: TensorType) -> list[TensorType]:
    return [t.with_shape(())]


def _cross_entropy_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    logits, labels = types
    check_dtype(logits, FLOATS)
    check_dtype(labels, INTS, "labels")
    if logits.rank != 2 or labels.rank != 1 or labels.shape[0] != logits.shape[0]:
        raise ShipeiError(f"takes logits [N, C] and class indices [N], got {logits} and {labels}")
    if not 0.0 <= attrs["label_smoothing"] <= 1.0:
        raise ShipeiError(f"label_smoothing must be in [0, 1], got {attrs['label_smoothing']}")
    return _scalar(logits)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float) -> np.ndarray:
    classes = logits.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ShipeiError(f"cross_entropy label out of range [0, {classes}): min {labels.min()}, max {labels.max()}")
    logp = _log_softmax(logits)
    nll = -np.take_along_axis(logp, labels[:, None].astype(np.int64), axis=1)[:, 0]
    smooth = -logp.mean(axis=1)
    return np.asarray(((1 - label_smoothing) * nll + label_smoothing * smooth).mean(), dtype=logits.dtype)


def _cross_entropy_decomposition(b, operands, attrs):
    """log_softmax, the labels' entries picked by a one-hot mask, then the mean of the negative."""
    logits, labels = operands
    n, classes = logits.shape
    logp = b("log_softmax", logits, axis=-1)
    hits = b("eq", b("reshape", labels, shape=(n, 1)), b("iota", length=classes, dtype=labels.dtype))
    picked = b("reduce_sum", b("mul", logp, b("cast", hits, dtype=logits.dtype)), axes=(1,))
    eps = attrs["label_smoothing"]
    if eps:
        picked = b("add", b("mul", picked, scalar(b, 1 - eps, logits)),
                   b("mul", b("reduce_mean", logp, axes=(1,)), scalar(b, eps, logits)))
    return [b("neg", b("reduce_mean", picked))]


op("cross_entropy", ["logits", "labels"], FusionKind.OPAQUE, _cross_entropy_rule, _cross_entropy,
   attrs={"label_smoothing": Attr(AttrKind.FLOAT, 0.0)}, indices={"labels": 1}, mixes=_mixes_all,
   decomposition=_cross_entropy_decomposition,
   samples=[Sample(((4, 5), (4,))), Sample(((3, 7), (3,)), {"label_smoothing": 0.1})],
   doc="Mean over N of -log softmax(logits)[label] (torch's F.cross_entropy with class indices).")


def _same_shape_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    a, b = types
    same_dtype(types)
    check_dtype(a, FLOATS)
    if a.shape != b.shape:
        raise ShipeiError(f"compares operands of one shape, got {a} and {b}")
    return _scalar(a)


def _mse_decomposition(b, operands, attrs):
    difference = b("sub", *operands)
    return [b("reduce_mean", b("mul", difference, difference))]


op("mse_loss", ["input", "target"], FusionKind.OPAQUE, _same_shape_rule,
   lambda x, y: np.asarray(np.mean((x - y) ** 2), dtype=x.dtype),
   decomposition=_mse_decomposition, mixes=_mixes_all,
   samples=[Sample(((4, 3), (4, 3))), Sample(((6,), (6,)))],
   doc="Mean of the squared differences (torch's F.mse_loss).")


def _bce_with_logits(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """max(x, 0) - x y + log(1 + exp(-|x|)): -[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], stably."""
    return np.asarray(np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))), dtype=x.dtype)


def _bce_decomposition(b, operands, attrs):
    x, y = operands
    softplus = b("log", b("add", b("exp", b("neg", b("abs", x))), scalar(b, 1.0, x)))
    return [b("reduce_mean", b("add", b("sub", b("relu", x), b("mul", x, y)), softplus))]


op("bce_with_logits", ["logits", "target"], FusionKind.OPAQUE, _same_shape_rule, _bce_with_logits,
   decomposition=_bce_decomposition, mixes=_mixes_all, samples=[Sample(((4, 3), (4, 3))), Sample(((5,), (5,)))],
   doc="Binary cross-entropy of sigmoid(logits) against targets in [0, 1], computed stably "
       "(torch's F.binary_cross_entropy_with_logits).")

