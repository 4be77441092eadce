"""simplify: algebraic identities and chain rewrites, a table of rules keyed by op name.

Each rule looks at one node and returns what replaces its results, or None. A rule applies only
when the replacement has exactly the node's type, so an identity never drops a broadcast:
`x * 1` -> `x` (and `x + 0`, `x - 0`, `x / 1`, `x ** 1`), `-(-x)` -> `x`, `x + (-y)` -> `x - y`;
`transpose(transpose(x))` -> one transpose or `x`; `reshape(reshape(x))` -> one reshape; a reshape,
broadcast or cast to what the operand already is, a slice or pad that keeps everything, a
one-piece concat or split, a reduction over size-1 axes with keepdims: the operand itself.
`where` with equal branches or a constant condition picks its branch; `dropout` is the identity
at inference (kept when `ctx.settings.training`). An operand of a broadcasting op that is
`broadcast_to(x)` reads `x` when broadcasting gives the same result (broadcasts of scalars).

`x + 0` -> `x` keeps a `-0.0` that `-0.0 + 0.0` would have made `0.0`: numerically equal, and
what every compiler does. Nothing here reassociates float arithmetic. A transpose of a
weight feeding a matmul is left alone: `freeze` stores it transposed once instead.
"""

from __future__ import annotations

from ..graph import Graph, Node, Value
from ..registry import FusionKind, get_op
from .manager import Pass, PassContext
from .rewrite import Rewriter, Rule, infers_same, is_splat_of, rewrite, splat


def _same(node: Node, value: Value) -> list[Value] | None:
    """`value` replaces the node's one result when it has the same type."""
    return [value] if len(node.results) == 1 and value.type == node.result.type else None


def _identity(unit: float, sides: tuple[int, ...]) -> Rule:
    """`x op unit` -> x, for the operand positions in `sides` that may hold the unit."""

    def rule(rw: Rewriter, node: Node) -> list[Value] | None:
        for i in sides:
            if is_splat_of(node.operands[i], unit):
                out = _same(node, node.operands[1 - i])
                if out:
                    return out
        return None

    return rule


def _neg(rw: Rewriter, node: Node) -> list[Value] | None:
    inner = node.operands[0].producer
    return _same(node, inner.operands[0]) if inner is not None and inner.op == "neg" else None


def _add(rw: Rewriter, node: Node) -> list[Value] | None:
    out = _identity(0, (0, 1))(rw, node)
    if out:
        return out
    x, y = node.operands
    if y.producer is not None and y.producer.op == "neg":
        return [rw.emit("sub", x, y.producer.operands[0])]
    return None


def _transpose(rw: Rewriter, node: Node) -> list[Value] | None:
    perm = node.attrs["perm"]
    x = node.operands[0]
    if x.producer is not None and x.producer.op == "transpose":
        inner = x.producer.attrs["perm"]
        perm = tuple(inner[p] for p in perm)
        x = x.producer.operands[0]
    if perm == tuple(range(len(perm))):
        return _same(node, x)
    if x is node.operands[0]:
        return None
    return [rw.emit("transpose", x, perm=perm)]


def _reshape(rw: Rewriter, node: Node) -> list[Value] | None:
    x = node.operands[0]
    if x.type == node.result.type:
        return [x]
    if x.producer is not None and x.producer.op == "reshape":
        return [rw.emit("reshape", x.producer.operands[0], shape=node.attrs["shape"])]
    return None


def _operand(rw: Rewriter, node: Node) -> list[Value] | None:
    """The operand, when it has the result's type: a broadcast or cast to what it already is, a
    slice that keeps every axis whole, a reduction with keepdims over axes of size 1."""
    return _same(node, node.operands[0])


def _where(rw: Rewriter, node: Node) -> list[Value] | None:
    cond, x, y = node.operands
    if x is y:
        return _same(node, x)
    s = splat(cond)
    if s is not None:
        return _same(node, x if s else y)
    return None


def _pad(rw: Rewriter, node: Node) -> list[Value] | None:
    return _same(node, node.operands[0]) if not any(node.attrs["pads"]) else None


def _concat(rw: Rewriter, node: Node) -> list[Value] | None:
    return _same(node, node.operands[0]) if len(node.operands) == 1 else None


def _split(rw: Rewriter, node: Node) -> list[Value] | None:
    return [node.operands[0]] if len(node.results) == 1 else None


def _dropout(rw: Rewriter, node: Node) -> list[Value] | None:
    return [node.operands[0]]


RULES: dict[str, Rule] = {
    "mul": _identity(1, (0, 1)),
    "add": _add,
    "sub": _identity(0, (1,)),
    "div": _identity(1, (1,)),
    "pow": _identity(1, (1,)),
    "neg": _neg,
    "transpose": _transpose,
    "reshape": _reshape,
    "broadcast_to": _operand,
    "cast": _operand,
    "where": _where,
    "slice": _operand,
    "pad": _pad,
    "concat": _concat,
    "split": _split,
    "reduce_sum": _operand, "reduce_mean": _operand, "reduce_max": _operand, "reduce_min": _operand,
    "dropout": _dropout,
}


def _unbroadcast(rw: Rewriter, node: Node) -> list[Value] | None:
    """Operands `broadcast_to(x)` of a broadcasting op read `x` when the result stays the same."""
    if get_op(node.op).fusion is not FusionKind.BROADCAST:
        return None
    operands = list(node.operands)
    for i, v in enumerate(operands):
        if v.producer is None or v.producer.op != "broadcast_to":
            continue
        trial = operands[:i] + [v.producer.operands[0]] + operands[i + 1:]
        if infers_same(node, trial):
            operands = trial
    if operands == node.operands:
        return None
    return rw.emit_op(node.op, *operands, **node.attrs)


class Simplify(Pass):
    name = "simplify"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        rules = dict(RULES)
        if ctx.settings.training:
            del rules["dropout"]

        def rule(rw: Rewriter, node: Node) -> list[Value] | None:
            specific = rules.get(node.op)
            return (specific(rw, node) if specific else None) or _unbroadcast(rw, node)

        for _ in range(8):  # rules only shrink the graph or shorten chains; a few rounds reach the fixpoint
            if not rewrite(graph, rule):
                break
        return graph
