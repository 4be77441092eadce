"""dce: remove nodes whose results nothing reads.

No op has side effects at inference, so a node is live exactly when an output depends on it.
Params nothing reads are removed too, but only from frozen graphs (with their weights): an
unfrozen graph keeps its signature, so a PyTorch state_dict still loads into it by name.
"""

from __future__ import annotations

from ..graph import Graph
from .manager import Pass, PassContext
from .rewrite import drop_unused_params


class DCE(Pass):
    name = "dce"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        live = set(graph.outputs)
        kept = []
        for node in reversed(graph.nodes):
            if any(r in live for r in node.results):
                kept.append(node)
                live.update(node.operands)
        graph.nodes = kept[::-1]
        drop_unused_params(graph, ctx)
        return graph
