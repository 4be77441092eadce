"""train-mode: a loss graph as training computes it.

Batch norm over running statistics (buffers) becomes `batch_norm_train`: it normalizes by the
batch's statistics, and its blended running statistics become extra outputs of the graph, which
the trainer writes back into the buffers after each step (torch's BatchNorm in train mode).
Dropout stays the identity for now (a seeded generator all targets share is still to come).
"""

from __future__ import annotations

from ..graph import Graph, Node, Value
from .rewrite import Rewriter, rewrite


def to_training(graph: Graph) -> list[str]:
    """Rewrite `graph` in place; the names of the buffers its extra outputs update, in order."""
    updates: list[tuple[str, Value]] = []

    def rule(rw: Rewriter, node: Node) -> list[Value] | None:
        if node.op != "batch_norm":
            return None
        x, mean, var, weight, bias = node.operands
        if not (mean.param and mean.param.buffer and var.param and var.param.buffer):
            return None
        y, new_mean, new_var = rw.emit_op("batch_norm_train", x, mean, var, weight, bias, eps=node.attrs["eps"])
        updates.extend([(mean.name, new_mean), (var.name, new_var)])
        return [y]

    rewrite(graph, rule)
    graph.outputs += [value for _, value in updates]
    return [name for name, _ in updates]
