"""decompose: composite ops rebuilt from the primitives their definitions name.

A composite op (gelu, softmax, layer_norm, attention, linear, ...) carries a decomposition in its
`OpDef`. A target lowers a composite natively where its framework has a faster kernel; where it
has none, code generation runs `decompose` first, so a target that lowers only the primitives runs
every model. The nodes a decomposition builds keep the composite's source location, placement,
fusion group and module, and decomposing repeats until no composite the target lacks is left
(attention's decomposition holds a softmax).

As a pass (`--passes decompose`) it decomposes every composite the target in the context does
not lower, or every composite when there is none: the program in primitives, to read or to test.
"""

from __future__ import annotations

from collections.abc import Callable

from ..graph import Builder, Graph, Node
from ..registry import get_op
from .manager import Pass, PassContext
from .rewrite import Rewriter, rewrite

#: Whether a target lowers a node itself; a composite it does not is decomposed.
Native = Callable[[Node], bool]


def needs_decomposing(graph: Graph, native: Native) -> bool:
    return any(get_op(n.op).composite and not native(n) for n in graph.nodes)


def decompose(graph: Graph, native: Native = lambda node: False) -> bool:
    """Replace, in place, every composite node `native` does not lower by its decomposition, until
    none is left; True when anything changed."""

    def expand(rw: Rewriter, node: Node) -> list | None:
        opdef = get_op(node.op)
        if opdef.decomposition is None or native(node):
            return None
        scratch = Graph(f"{node.op}_decomposition")
        results = opdef.decomposition(Builder(scratch), list(node.operands), node.attrs)
        for built in scratch.nodes:
            built.loc, built.placement, built.group, built.module = node.loc, node.placement, node.group, node.module
        rw.nodes += scratch.nodes
        return results

    changed = False
    while rewrite(graph, expand):
        changed = True
    return changed


class Decompose(Pass):
    name = "decompose"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        decompose(graph, ctx.native)
        return graph
