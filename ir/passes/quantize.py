"""quantize: post-training int8 weight quantization, per output channel, symmetric.

Each layer weight (`layer_weights`: matmul and conv weights, and gathered embedding tables, one
scale per row) with at least `ctx.settings.quantize_min_elements` elements (default 1024),
and at least two per channel so that it shrinks (which also leaves a gathered scale alone and
keeps the pass idempotent), becomes `q = round(w / s)` in [-127, 127] with `s = max|w| / 127`
per output channel, and its readers read the dequantized `cast(q, f32) * s` instead (a gather
dequantizes only the rows it reads):

    %w_q: buffer i32[10, 256]          // int8 values: stored as int8 in the weights file
    %w_scale: param f32[10, 1]
    %0 = cast(%w_q) {dtype = f32}
    %1 = mul(%0, %w_scale)             // what used to read %w reads %1

The IR has no i8 dtype yet, so `q` is typed i32 and stored as int8 (the weights file holds int8,
a quarter of f32; a target widens it when it loads it). Where the target multiplies int8
directly (`ctx.target.int8_matmul`, or `ctx.settings.int8_matmul`), the scale of a matmul weight is folded
past the matmul instead: `matmul(x, cast(q)) * s[N]`, the form an int8 GEMM with a float rescale
computes. CPU targets keep the dequantize before the matmul. Frozen weights only; run it last
(freeze leaves the dequantize alone: folding it would grow the model). Per weight,
`ctx.results.quantize_report` records its relative error and its bytes before and after;
`summary` says it in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ShipeiError
from ..graph import Graph, Node, Value
from ..types import DType
from .manager import PassContext, WeightPass
from .rewrite import Rewriter, add_weight, drop_unused_params, layer_weights, rewrite


@dataclass(frozen=True)
class Quantized:
    error: float        # max |dequantized - w| / max |w|
    dense_bytes: int
    stored_bytes: int   # int8 values plus scales


def summary(report: Mapping[str, Quantized]) -> str:
    dense = sum(r.dense_bytes for r in report.values())
    stored = sum(r.stored_bytes for r in report.values())
    worst = max(report, key=lambda name: report[name].error)
    return (f"quantize: {len(report)} weight(s) to int8 per channel, {dense / 1024:,.1f} KiB -> "
            f"{stored / 1024:,.1f} KiB; largest relative error {report[worst].error:.2g} ({worst})")


def quantize_array(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float scales shaped to broadcast along `axis`), symmetric per channel."""
    others = tuple(a for a in range(w.ndim) if a != axis)
    scale = np.max(np.abs(w.astype(np.float64)), axis=others, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def _only_along(scale: Value, axis: int) -> bool:
    return all(d == 1 for i, d in enumerate(scale.shape) if i != axis % scale.type.rank)


def _scales_rows(scale: Value, table: Value, axis: int) -> bool:
    """Whether `scale` has one value per slice of `table` along `axis`, so a gather along it can
    gather the scale too (a table that is also a conv weight may be scaled along another axis)."""
    return _only_along(scale, axis) and scale.shape[axis] == table.shape[axis]


class Quantize(WeightPass):
    name = "quantize"

    def rewrite(self, graph: Graph, ctx: PassContext, weights: dict[str, np.ndarray]) -> Graph:
        limit = ctx.settings.quantize_min_elements
        int8_matmul = ctx.settings.int8_matmul
        if int8_matmul is None:
            int8_matmul = bool(ctx.target and ctx.target.int8_matmul)
        report = ctx.results.quantize_report
        chosen: dict[Value, tuple[Value, Value]] = {}
        for p, axis in layer_weights(graph, tables=True).items():
            w = np.asarray(weights[p.name])
            if w.size < limit or w.size < 2 * w.shape[axis]:
                continue  # small, or one value per channel: int8 plus an f32 scale would not shrink it
            if not np.isfinite(w).all():  # int8 has no NaN: its rows would quantize to zeros
                raise ShipeiError(f"cannot quantize '{p.name}': it holds {np.count_nonzero(~np.isfinite(w))} NaN or "
                                  f"infinite values", p.param.loc, hint="quantize needs finite weights")
            q, scale = quantize_array(w, axis)
            scale = scale.astype(p.dtype.numpy)
            error = float(np.abs(q * scale - w).max() / max(np.abs(w).max(), 1e-30))
            report[p.name] = Quantized(error, int(w.nbytes), int(q.nbytes + scale.nbytes))
            chosen[p] = (add_weight(graph, ctx, f"{p.name}_q", q, DType.i32, buffer=True, storage=np.int8, source=p),
                         add_weight(graph, ctx, f"{p.name}_scale", scale, p.dtype, source=p))
        dequantized: dict[Value, Value] = {}

        def dequantize(rw: Rewriter, p: Value) -> Value:
            if p not in dequantized:
                q, scale = chosen[p]
                dequantized[p] = rw.emit("mul", rw.emit("cast", q, dtype=p.dtype), scale)
            return dequantized[p]

        def rule(rw: Rewriter, node: Node) -> list[Value] | None:
            if not any(v in chosen for v in node.operands):
                return None
            table = node.operands[0]
            if node.op == "gather" and table in chosen and _scales_rows(chosen[table][1], table, node.attrs["axis"]):
                q, scale = chosen[table]  # dequantize the gathered rows, not the whole table
                rows = rw.emit("cast", rw.emit("gather", q, node.operands[1], **node.attrs), dtype=table.dtype)
                return [rw.emit("mul", rows, rw.emit("gather", scale, node.operands[1], **node.attrs))]
            w = node.operands[-1] if node.op == "matmul" else None
            if int8_matmul and w in chosen and _only_along(chosen[w][1], -1):
                q, scale = chosen[w]
                out = rw.emit("matmul", node.operands[0], rw.emit("cast", q, dtype=w.dtype))
                return [rw.emit("mul", out, rw.emit("reshape", scale, shape=scale.shape[-1:]))]
            operands = [dequantize(rw, v) if v in chosen else v for v in node.operands]
            return rw.emit_op(node.op, *operands, **node.attrs)

        rewrite(graph, rule)
        drop_unused_params(graph, ctx)
        return graph
