"""fold-constants: evaluate nodes whose operands are all constants, with the op's numpy reference.

The result is computed exactly as the reference interpreter computes it at declared precision
(f16/bf16 in f32, rounded to the result dtype), so folding never changes what the spec says.
`iota` of a static length folds too. Big constants are kept in check: a fold whose results hold
more than `ctx.settings.fold_limit` elements (default 1024) and more than its constant operands
together is skipped, so `broadcast_to(0.0, [4096, 4096])` stays one op instead of 64 MB of
literal in the generated program. The folded-away operands are left for `dce`.
"""

from __future__ import annotations

from ..graph import Graph, Node, Value
from .manager import Pass, PassContext
from .rewrite import Rewriter, constant_value, evaluate, rewrite


class FoldConstants(Pass):
    name = "fold-constants"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        limit = ctx.settings.fold_limit

        def rule(rw: Rewriter, node: Node) -> list[Value] | None:
            if node.op == "constant":
                return None
            arrays = [constant_value(v) for v in node.operands]
            if any(a is None for a in arrays):
                return None
            results = evaluate(node, arrays)
            if results is None:
                return None
            size = sum(a.size for a in results)
            if size > limit and size > sum(a.size for a in arrays):
                return None
            return [rw.constant(a, r.dtype) for a, r in zip(results, node.results)]

        rewrite(graph, rule)
        return graph
