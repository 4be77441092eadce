"""Which axes of a graph's values carry the batch, and proof that no op mixes batch rows.

A batch can be cut into micro-batches (a pipeline) or padded (jax's `pad_to`) only when every
row of every output depends on the same row of the inputs alone: no op may combine elements
along the batch axis. Elementwise and broadcast ops never do; for the rest, the op's definition
says which axes of each operand it combines (`OpDef.mixes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ShipeiError
from .graph import Graph
from .ops.rules import batch_axes
from .registry import FusionKind, all_ops
from .types import Sym


@dataclass(frozen=True)
class BatchLayout:
    """The batch symbol, and the axes of each input and output whose dim is exactly it."""

    symbol: str
    inputs: list[tuple[int, ...]]
    outputs: list[tuple[int, ...]]


def batch_symbol(graph: Graph, purpose: str) -> str:
    """The batch symbol: the first input's leading symbolic dim (a loss may mix rows: a mean)."""
    batch = next((str(v.shape[0]) for v in graph.inputs
                  if v.type.rank and isinstance(v.shape[0], Sym) and str(v.shape[0]) in v.shape[0].symbols), None)
    if batch is None:
        raise ShipeiError(f"{purpose} needs a batch dim: no input of {graph.name} has a shape symbol as its first dim")
    return batch


def batch_layout(graph: Graph, purpose: str) -> BatchLayout:
    """The batch symbol (the first input's leading symbolic dim) and the batch axes of each input
    and output, or a ShipeiError saying why splitting or padding the batch for `purpose` would
    change results."""
    batch = batch_symbol(graph, purpose)
    ops = all_ops()
    values = [*graph.inputs, *graph.params, *(r for n in graph.nodes for r in n.results)]
    for v in values:
        if any(isinstance(d, Sym) and batch in d.symbols and str(d) != batch for d in v.shape):
            raise ShipeiError(f"{purpose} cannot split batch dim {batch}: {v.type} uses it in an expression")
    for node in graph.nodes:
        if ops[node.op].fusion in (FusionKind.ELEMWISE, FusionKind.BROADCAST):
            continue
        mixes = ops[node.op].mixes
        if mixes is None:
            raise ShipeiError(f"{purpose} cannot prove that '{node.op}' keeps batch rows apart", node.loc)
        for v, mixed in zip(node.operands, mixes(node, batch), strict=True):
            if set(mixed) & set(batch_axes(v, batch)):
                raise ShipeiError(f"{purpose}: '{node.op}' combines elements along batch dim {batch}, "
                                  "so splitting the batch would change the result", node.loc)
    return BatchLayout(batch, [batch_axes(v, batch) for v in graph.inputs],
                       [batch_axes(v, batch) for v in graph.outputs])
