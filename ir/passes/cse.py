"""cse: compute each distinct expression once.

Two nodes are the same expression when they have the same op, operands (in any order for a
commutative op), attributes and device. Constants compare by dtype, shape and bytes, so `-0.0`
and `0.0` stay apart and every `nan` is one value. The later node's results are replaced by the
earlier one's, which defines them before every use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..graph import Graph, Node, Value
from ..registry import get_op
from .manager import Pass, PassContext
from .rewrite import Rewriter, rewrite


def _key(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, (tuple, list)):
        return tuple(_key(v) for v in value)
    return (type(value).__name__, value)


def expression_key(node: Node, ids: dict[Value, int]) -> tuple:
    operands = [ids[v] for v in node.operands]
    if "commutative" in get_op(node.op).traits:
        operands.sort()
    attrs = tuple((k, _key(v)) for k, v in sorted(node.attrs.items()))
    return node.op, tuple(operands), attrs, node.placement


class CSE(Pass):
    name = "cse"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        ids: dict[Value, int] = {}

        def number(v: Value) -> int:
            return ids.setdefault(v, len(ids))

        for v in graph.inputs + graph.params:
            number(v)
        seen: dict[tuple, Node] = {}

        def rule(rw: Rewriter, node: Node) -> list[Value] | None:
            for v in node.operands:
                number(v)
            key = expression_key(node, ids)
            if key in seen:
                return seen[key].results
            seen[key] = node
            for r in node.results:
                number(r)
            return None

        rewrite(graph, rule)
        return graph
