"""canonicalize: one spelling per computation, so CSE and simplify see equal things as equal.

- Operands of commutative ops (the registry's "commutative" trait) are ordered constants last,
  then params, then everything else: `add(%bias, %x)` -> `add(%x, %bias)`. Comparisons with the
  constant on the left are mirrored: `gt(%c, %x)` -> `lt(%x, %c)`.
- A constant whose elements are all equal becomes a rank-0 constant where broadcasting gives
  the same result anyway: `mul(%x, [[2.0, 2.0]])` -> `mul(%x, 2.0)` when %x is [B, 2].
- A constant's array is held at its dtype (a parsed `array<1.1>` of f32 holds the f32 value).
- `axis` attributes are non-negative and `axes` sorted, non-negative, `none` when all axes.
"""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, Value
from ..registry import AttrKind, FusionKind, get_op
from ..types import normalize_axis
from .manager import Pass, PassContext
from .rewrite import Rewriter, constant_value, infers_same, rewrite, splat

#: Comparison -> the same comparison with its operands swapped.
MIRRORED = {"lt": "gt", "gt": "lt", "le": "ge", "ge": "le"}


def _rank(v: Value) -> int:
    """Sort key: plain values first, then params, then constants."""
    return 2 if constant_value(v) is not None else 1 if v.param is not None else 0


def _operand_order(rw: Rewriter, node: Node) -> list[Value] | None:
    if len(node.operands) != 2:
        return None
    if "commutative" not in get_op(node.op).traits and node.op not in MIRRORED:
        return None
    a, b = node.operands
    if _rank(a) <= _rank(b):
        return None
    return rw.emit_op(MIRRORED.get(node.op, node.op), b, a, **node.attrs)


def _scalar_constants(rw: Rewriter, node: Node) -> list[Value] | None:
    if get_op(node.op).fusion not in (FusionKind.ELEMWISE, FusionKind.BROADCAST):
        return None
    operands = list(node.operands)
    for i, v in enumerate(operands):
        s = splat(v)
        if s is None or v.type.rank == 0:
            continue
        if infers_same(node, operands[:i] + [Value(v.type.with_shape(()))] + operands[i + 1:]):
            operands[i] = rw.constant(np.asarray(s), v.dtype)
    if operands == node.operands:
        return None
    return rw.emit_op(node.op, *operands, **node.attrs)


def _constant_dtype(rw: Rewriter, node: Node) -> list[Value] | None:
    if node.op != "constant":
        return None
    value, dtype = node.attrs["value"], node.attrs["dtype"]
    if value.dtype == dtype.numpy:
        return None
    return [rw.constant(value, dtype)]


def _axes(rw: Rewriter, node: Node) -> list[Value] | None:
    specs = get_op(node.op).attrs
    if not node.operands:
        return None
    rank = node.operands[0].type.rank
    attrs = dict(node.attrs)
    if "axis" in specs and specs["axis"].kind is AttrKind.INT and rank:
        attrs["axis"] = normalize_axis(attrs["axis"], rank)
    if "axes" in specs and specs["axes"].kind is AttrKind.OPT_INTS and attrs["axes"] is not None:
        axes = tuple(sorted({normalize_axis(a, rank) for a in attrs["axes"]}))
        attrs["axes"] = None if axes == tuple(range(rank)) else axes
    if attrs == node.attrs:
        return None
    return rw.emit_op(node.op, *node.operands, **attrs)


RULES = (_operand_order, _scalar_constants, _constant_dtype, _axes)


class Canonicalize(Pass):
    name = "canonicalize"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        def rule(rw: Rewriter, node: Node) -> list[Value] | None:
            for r in RULES:
                out = r(rw, node)
                if out is not None:
                    return out
            return None

        for _ in range(4):  # each rule fires at most once per node, so a few rounds reach the fixpoint
            if not rewrite(graph, rule):
                break
        return graph
