"""layout: run convolutions and pools channels-last (NHWC) for targets that prefer it.

The IR's conv2d and pools are NCHW (PyTorch's convention). For a target whose convolutions are
NHWC-native, each of them is wrapped as `NCHW(conv(NCHW(a)))` where `a` is the NHWC activation
(`NCHW`, `NHWC` being the two transposes), and the transposes are then moved out of the way:

1. every conv/pool reads `NCHW(NHWC(x))` and its result is `NCHW(NHWC(y))` (identity pairs);
2. an `NCHW(a)` operand sinks through elementwise and broadcasting ops (`relu(NCHW(a))` ->
   `NCHW(relu(a))`); their other operands are put in NHWC too: a lower-rank operand such as a
   per-channel bias `[C, 1, 1]` is padded to rank 4 and transposed (freeze folds that for
   frozen weights), a scalar needs nothing;
3. `NHWC(NCHW(a))` -> `a`, and once nothing sinks further, `NCHW(NHWC(x))` -> `x`.

What remains is one transpose where the activation enters the NHWC region (the graph input, or
after an op that needs NCHW) and one where it leaves (a reshape to the classifier): transposes
at the edges only. An f32/f64 batch_norm of an NHWC activation becomes a multiply-add by its
per-channel scale and shift, which broadcast along NHWC's last axis; broadcast_to carries a shape
and f16/bf16 batch norm computes in f32, so transposes stop there.

The layout comes from `ctx.settings.layout` ("NCHW" or "NHWC"), else from the target's preference
(`ctx.target.layout`). XLA targets (jax, tf) choose physical layouts themselves
and torch's channels-last is a memory format (`emit(..., channels_last=True)`), not transposes,
so no target asks for it yet: it stays NCHW unless asked.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShipeiError
from ..graph import Graph, Node, Value
from ..registry import FusionKind, get_op
from ..types import DType
from .manager import Pass, PassContext
from .rewrite import Rewriter, rewrite
from .simplify import RULES as SIMPLIFY_RULES

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)

#: Ops whose operand 0 and result are NCHW activations.
CHANNELS_FIRST = frozenset({"conv2d", "max_pool2d", "avg_pool2d"})

#: Broadcasting ops that are not plain numpy broadcasting, so a transpose cannot sink through.
NO_SINK = frozenset({"batch_norm", "broadcast_to"})


def _is_nchw_of(v: Value) -> Value | None:
    """`a` when `v` is `transpose(a, TO_NCHW)`."""
    node = v.producer
    if node is not None and node.op == "transpose" and node.attrs["perm"] == TO_NCHW:
        return node.operands[0]
    return None


def _wrap(rw: Rewriter, node: Node) -> list[Value] | None:
    if node.op not in CHANNELS_FIRST or node.operands[0].type.rank != 4:
        return None
    x = node.operands[0]
    if _is_nchw_of(x) is None:
        x = rw.emit("transpose", rw.emit("transpose", x, perm=TO_NHWC), perm=TO_NCHW)
    y = rw.emit_op(node.op, x, *node.operands[1:], **node.attrs)[0]
    return [rw.emit("transpose", rw.emit("transpose", y, perm=TO_NHWC), perm=TO_NCHW)]


def _cancel(rw: Rewriter, node: Node) -> list[Value] | None:
    """NHWC(NCHW(a)) -> a; the other order waits until sinking is done (it is the pair `_wrap` made)."""
    if node.op == "transpose" and node.attrs["perm"] == TO_NHWC:
        inner = _is_nchw_of(node.operands[0])
        return [inner] if inner is not None else None
    return None


def _sink(rw: Rewriter, node: Node) -> list[Value] | None:
    opdef = get_op(node.op)
    if opdef.fusion not in (FusionKind.ELEMWISE, FusionKind.BROADCAST) or node.op in NO_SINK:
        return None
    if len(node.results) != 1 or node.result.type.rank != 4:
        return None
    if not any(_is_nchw_of(v) is not None for v in node.operands):
        return None
    operands = []
    for v in node.operands:
        inner = _is_nchw_of(v)
        if inner is not None:
            operands.append(inner)
        elif v.type.rank == 0:
            operands.append(v)
        elif v.type.rank == 4 and v.producer is not None:
            return None  # an NCHW activation: sinking would only move the transpose onto it
        else:
            padded = v if v.type.rank == 4 else rw.emit("reshape", v, shape=(1,) * (4 - v.type.rank) + v.shape)
            operands.append(rw.emit("transpose", padded, perm=TO_NHWC))
    out = rw.emit_op(node.op, *operands, **node.attrs)[0]
    return [rw.emit("transpose", out, perm=TO_NCHW)]


def _batch_norm(rw: Rewriter, node: Node) -> list[Value] | None:
    """batch_norm(NCHW(a)) -> NCHW(a * scale + shift), scale and shift per channel ([C], which
    broadcasts along NHWC's last axis); f32 and f64 only, as f16/bf16 batch norm computes in f32."""
    if node.op != "batch_norm" or node.result.dtype not in (DType.f32, DType.f64):
        return None
    a = _is_nchw_of(node.operands[0])
    if a is None:
        return None
    mean, var, gamma, beta = node.operands[1:]
    eps = rw.constant(np.asarray(node.attrs["eps"]), node.result.dtype)
    scale = rw.emit("mul", gamma, rw.emit("rsqrt", rw.emit("add", var, eps)))
    shift = rw.emit("sub", beta, rw.emit("mul", mean, scale))
    return [rw.emit("transpose", rw.emit("add", rw.emit("mul", a, scale), shift), perm=TO_NCHW)]


def layout_for(ctx: PassContext) -> str:
    layout = ctx.settings.layout or (ctx.target.layout if ctx.target else "NCHW")
    if layout not in ("NCHW", "NHWC"):
        raise ShipeiError(f"unknown layout '{layout}'", hint="layouts are NCHW and NHWC")
    return str(layout)


class Layout(Pass):
    name = "layout"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if layout_for(ctx) == "NCHW" or not any(n.op in CHANNELS_FIRST for n in graph.nodes):
            return graph
        rewrite(graph, _wrap)
        for _ in range(len(graph.nodes)):  # each round moves every NCHW transpose at least one op down
            if not rewrite(graph, lambda rw, node: _sink(rw, node) or _batch_norm(rw, node) or _cancel(rw, node)):
                break
        rewrite(graph, lambda rw, node: SIMPLIFY_RULES["transpose"](rw, node) if node.op == "transpose" else None)
        return graph
