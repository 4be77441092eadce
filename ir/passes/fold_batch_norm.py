"""fold-batch-norm: fold inference BatchNorm into the convolution or linear layer before it.

    batch_norm(conv2d(x, W [, b]) [+ b], mean, var, gamma, beta)
        -> conv2d(x, W * s, (b - mean) * s + beta)        where s = gamma / sqrt(var + eps)

per output channel (axis 0 of W), and the same for `matmul(x, W) [+ b]` on [N, C] activations,
whose output channels are the last axis of W (`W` may be `transpose(P)`, as Linear writes it),
with the bias added after the matmul.

With frozen weights (`ctx.frozen`, `ctx.weights`) the folded weight and bias are computed here,
in float64, as new params named after the layer (`stem.folded_weight`, `stem.folded_bias`); the
old params, once nothing reads them, are dropped with their weights. Every operand of the rewrite
other than `x` must then be known at compile time. Without them, as ONNX Runtime folds when it
creates a session, the fold is written as ops over the params (float32 and float64 layers whose
weights and statistics are computed from params alone), which the program computes once when its
weights are bound (`codegen.prepare`); training graphs keep their batch norms, whose statistics
are the batch's. Either way the conv or matmul must feed only the batch norm (through the bias add).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..graph import Graph, Node, Value
from ..types import DType
from .manager import PassContext, WeightPass
from .rewrite import Rewriter, add_weight, drop_unused_params, first_param, rewrite, static_value


@dataclass
class _Fold:
    """A batch norm that folds: its layer (conv2d or matmul), the layer's weight, the biases
    added before the norm (the layer's own, an add's), and the norm's statistics."""

    norm: Node
    layer: Node
    weight: Value
    biases: list[Value]
    stats: list[Value]  # mean, var, gamma, beta


def _layer(value: Value) -> Node | None:
    """The conv2d, or the matmul on [N, C] activations with a 2-D weight, producing `value`."""
    node = value.producer
    if node is None or node.op not in ("conv2d", "matmul"):
        return None
    if node.op == "matmul" and (value.type.rank != 2 or node.operands[1].type.rank != 2):
        return None
    return node


def _per_channel(b: Value, y: Value) -> bool:
    """Whether `b` broadcasts along y's channel axis (1) only."""
    if b.type.rank > y.type.rank or not b.type.is_static:
        return False
    shape = (1,) * (y.type.rank - b.type.rank) + b.shape
    return all(d == 1 for i, d in enumerate(shape) if i != 1) and shape[1] in (1, y.shape[1])


def _match(node: Node, only_user: Callable[[Value, Node], bool]) -> _Fold | None:
    """The fold of `node`, when it is a batch norm of a conv2d or matmul that feeds it alone."""
    if node.op != "batch_norm":
        return None
    y, *stats = node.operands
    if not only_user(y, node):
        return None
    biases = []
    if y.producer is not None and y.producer.op == "add":
        add = y.producer
        i = next((i for i, v in enumerate(add.operands) if _layer(v)), None)
        if i is None or not only_user(add.operands[i], add) or not _per_channel(add.operands[1 - i], y):
            return None
        biases.append(add.operands[1 - i])
        y = add.operands[i]
    layer = _layer(y)
    if layer is None:
        return None
    return _Fold(node, layer, layer.operands[1], [*layer.operands[2:], *biases], stats)


def _layer_prefix(value: Value) -> str:
    param = first_param([value])
    name = param.name if param is not None else "batch_norm"
    return name.rsplit(".", 1)[0] if "." in name else name


def _weights_only(value: Value, memo: dict[Value, bool]) -> bool:
    """Computed from params and constants alone, at a static shape."""
    if value not in memo:
        node = value.producer
        if not value.type.is_static or (node is None and value.param is None):
            memo[value] = False  # a graph input, or a shape that depends on one
        elif node is None or node.op == "constant":
            memo[value] = True
        else:
            memo[value] = bool(node.operands) and all(_weights_only(v, memo) for v in node.operands)
    return memo[value]


def _fold_frozen(rw: Rewriter, fold: _Fold, graph: Graph, ctx: PassContext, weights: dict) -> list[Value] | None:
    """The fold computed now, from the frozen weights."""
    arrays = [static_value(v, weights) for v in (fold.weight, *fold.stats, *fold.biases)]
    if any(a is None for a in arrays):
        return None
    w, mean, var, gamma, beta = (a.astype(np.float64) for a in arrays[:5])
    scale = gamma / np.sqrt(var + fold.norm.attrs["eps"])
    bias = sum((np.broadcast_to(b.reshape(-1).astype(np.float64), scale.shape) for b in arrays[5:]),
               np.zeros_like(scale))
    w_new = w * (scale.reshape(-1, 1, 1, 1) if fold.layer.op == "conv2d" else scale.reshape(1, -1))
    b_new = (bias - mean) * scale + beta
    prefix, dtype = _layer_prefix(fold.weight), fold.norm.result.dtype
    w_param = add_weight(graph, ctx, f"{prefix}.folded_weight", w_new.astype(dtype.numpy), dtype,
                         source=fold.weight)
    b_param = add_weight(graph, ctx, f"{prefix}.folded_bias", b_new.astype(dtype.numpy), dtype,
                         source=fold.weight)
    return _refolded(rw, fold, w_param, b_param)


def _fold_at_load(rw: Rewriter, fold: _Fold, memo: dict[Value, bool]) -> list[Value] | None:
    """The fold as ops over the params, for the program to compute when its weights are bound."""
    dtype = fold.norm.result.dtype
    operands = (fold.weight, *fold.stats, *fold.biases)
    channels = fold.norm.result.shape[1]
    if dtype not in (DType.f32, DType.f64) or not all(_weights_only(v, memo) and v.dtype is dtype for v in operands):
        return None
    if any(math.prod(b.shape) != channels for b in fold.biases):
        return None  # one value for every channel: left to the batch norm
    mean, var, gamma, beta = fold.stats
    eps = rw.constant(np.asarray(fold.norm.attrs["eps"]), dtype)
    scale = rw.emit("mul", gamma, rw.emit("rsqrt", rw.emit("add", var, eps)))
    centre = mean  # the layer's output mean less its biases: (b - mean) * s + beta = beta - (mean - b) * s
    for b in fold.biases:
        centre = rw.emit("sub", centre, rw.emit("reshape", b, shape=(channels,)) if b.type.rank != 1 else b)
    bias = rw.emit("sub", beta, rw.emit("mul", centre, scale))
    per_channel = (channels, 1, 1, 1) if fold.layer.op == "conv2d" else (1, channels)
    weight = rw.emit("mul", fold.weight, rw.emit("reshape", scale, shape=per_channel))
    weight.hint, bias.hint = "folded_weight", "folded_bias"
    return _refolded(rw, fold, weight, bias)


def _refolded(rw: Rewriter, fold: _Fold, weight: Value, bias: Value) -> list[Value]:
    """The layer again, on the folded weight, its bias the folded one."""
    x = fold.layer.operands[0]
    if fold.layer.op == "conv2d":
        return rw.emit_op("conv2d", x, weight, bias, **fold.layer.attrs)
    return [rw.emit("add", rw.emit_op("matmul", x, weight, **fold.layer.attrs)[0], bias)]


def _as_layer(rw: Rewriter, fold: _Fold, build: Callable[[], list[Value] | None]) -> list[Value] | None:
    """`build`'s nodes made as the layer's: the folded layer is the layer (its module, which device
    maps place, its source line), the norm having gone into its weights."""
    rw.current = fold.layer
    try:
        return build()
    finally:
        rw.current = fold.norm


class FoldBatchNorm(WeightPass):
    name = "fold-batch-norm"
    frozen_only = False  # without frozen weights it folds at load

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if ctx.frozen and ctx.weights is not None:
            return self.rewrite(graph, ctx, ctx.weights)
        if ctx.settings.training:
            return graph
        memo: dict[Value, bool] = {}
        only_user = _only_user(graph)
        rewrite(graph, lambda rw, node: (fold := _match(node, only_user))
                and _as_layer(rw, fold, lambda: _fold_at_load(rw, fold, memo)))
        return graph

    def rewrite(self, graph: Graph, ctx: PassContext, weights: dict[str, np.ndarray]) -> Graph:
        only_user = _only_user(graph)
        rewrite(graph, lambda rw, node: (fold := _match(node, only_user))
                and _as_layer(rw, fold, lambda: _fold_frozen(rw, fold, graph, ctx, weights)))
        drop_unused_params(graph, ctx)
        return graph


def _only_user(graph: Graph) -> Callable[[Value, Node], bool]:
    """Whether `node` alone reads `v` (which is not an output)."""
    users = graph.users()
    outputs = set(graph.outputs)
    return lambda v, node: v not in outputs and users.get(v, []) == [node]
