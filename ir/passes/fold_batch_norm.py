"""fold-batch-norm: fold inference BatchNorm into the convolution or linear layer before it.

    batch_norm(conv2d(x, W) [+ b], mean, var, gamma, beta)
        -> conv2d(x, W * s) + (b - mean) * s + beta        where s = gamma / sqrt(var + eps)

per output channel (axis 0 of W), and the same for `matmul(x, W) [+ b]` on [N, C] activations,
whose output channels are the last axis of W (`W` may be `transpose(P)`, as Linear writes it).
The folded weight and bias are new params named after the layer (`stem.folded_weight`,
`stem.folded_bias`); the old params, once nothing reads them, are dropped with their weights.
It applies only to frozen weights (`ctx.frozen`, `ctx.weights`): the rewrite bakes their values
in. The conv or matmul must feed only the batch norm (through the bias add), and every operand
of the rewrite other than `x` must be known at compile time.
"""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, Value
from .manager import PassContext, WeightPass
from .rewrite import Rewriter, add_weight, drop_unused_params, first_param, rewrite, static_value


def _layer(value: Value) -> Node | None:
    """The conv2d, or the matmul on [N, C] activations with a 2-D weight, producing `value`."""
    node = value.producer
    if node is None or node.op not in ("conv2d", "matmul"):
        return None
    if node.op == "matmul" and (value.type.rank != 2 or node.operands[1].type.rank != 2):
        return None
    return node


def _channel_bias(b: Value, y: Value, weights: dict[str, np.ndarray]) -> np.ndarray | None:
    """b's values, per channel, if it is known and broadcasts along y's channel axis (1) only."""
    array = static_value(b, weights)
    if array is None or array.ndim > y.type.rank:
        return None
    shape = (1,) * (y.type.rank - array.ndim) + array.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, y.shape[1]):
        return None
    return np.broadcast_to(array.reshape(-1).astype(np.float64), (y.shape[1],))


def _layer_prefix(value: Value) -> str:
    param = first_param([value])
    name = param.name if param is not None else "batch_norm"
    return name.rsplit(".", 1)[0] if "." in name else name


class FoldBatchNorm(WeightPass):
    name = "fold-batch-norm"

    def rewrite(self, graph: Graph, ctx: PassContext, weights: dict[str, np.ndarray]) -> Graph:
        users = graph.users()
        outputs = set(graph.outputs)

        def only_user(v: Value, node: Node) -> bool:
            return v not in outputs and users.get(v, []) == [node]

        def rule(rw: Rewriter, node: Node) -> list[Value] | None:
            if node.op != "batch_norm":
                return None
            y, *stats = node.operands
            stats = [static_value(v, weights) for v in stats]
            if any(s is None for s in stats) or not only_user(y, node):
                return None
            mean, var, gamma, beta = (s.astype(np.float64) for s in stats)
            scale = gamma / np.sqrt(var + node.attrs["eps"])
            bias: np.ndarray | float = 0.0
            if y.producer is not None and y.producer.op == "add":
                add = y.producer
                i = next((i for i, v in enumerate(add.operands) if _layer(v)), None)
                if i is None or not only_user(add.operands[i], add):
                    return None
                bias = _channel_bias(add.operands[1 - i], y, weights)
                if bias is None:
                    return None
                y = add.operands[i]
            layer = _layer(y)
            if layer is None:
                return None
            x, w = layer.operands
            w_value = static_value(w, weights)
            if w_value is None:
                return None
            w_new = w_value * (scale.reshape(-1, 1, 1, 1) if layer.op == "conv2d" else scale.reshape(1, -1))
            b_new = (bias - mean) * scale + beta
            prefix, dtype = _layer_prefix(w), y.dtype
            w_param = add_weight(graph, ctx, f"{prefix}.folded_weight", w_new.astype(dtype.numpy), dtype)
            b_param = add_weight(graph, ctx, f"{prefix}.folded_bias", b_new.astype(dtype.numpy), dtype)
            out = rw.emit_op(layer.op, x, w_param, **layer.attrs)[0]
            if layer.op == "conv2d":
                return [rw.emit("add", out, rw.emit("reshape", b_param, shape=(b_new.size, 1, 1)))]
            return [rw.emit("add", out, b_param)]

        rewrite(graph, rule)
        drop_unused_params(graph, ctx)
        return graph
