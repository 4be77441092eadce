"""Which axes of a graph's values carry the batch, and proof that no op mixes batch rows.

A batch can be cut into micro-batches (a pipeline) or padded (jax's `pad_to`) only when every
row of every output depends on the same row of the inputs alone: no op may combine elements
along the batch axis. Elementwise and broadcast ops never do; for the rest, `MIXED_AXES` says,
per op, which axes of each operand it combines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import ShipeiError
from .graph import Graph, Node, Value
from .registry import FusionKind, all_ops
from .types import Sym, normalize_axis


@dataclass(frozen=True)
class BatchLayout:
    """The batch symbol, and the axes of each input and output whose dim is exactly it."""

    symbol: str
    inputs: list[tuple[int, ...]]
    outputs: list[tuple[int, ...]]


def _reshape_axes(node: Node, batch: str) -> list[tuple[int, ...]]:
    """A row-major reshape keeps rows apart only when the batch is the leading dim on both sides."""
    before, after = batch_axes(node.operands[0], batch), batch_axes(node.result, batch)
    return [() if before == after == (0,) or not before else tuple(range(node.operands[0].type.rank))]


def _attention_axes(node: Node, batch: str) -> list[tuple[int, ...]]:
    """q mixes its depth axis; k and v their key axis (and k its depth)."""
    rank = node.operands[0].type.rank
    return [(rank - 1,), (rank - 2, rank - 1), (rank - 2,)]


def _normalized(axes, rank: int) -> tuple[int, ...]:
    return tuple(range(rank)) if axes is None else tuple(normalize_axis(a, rank) for a in axes)


#: Per op that is not elementwise: the axes of each operand whose elements it combines. An op that
#: combines elements along the batch axis keeps the batch whole; an op missing here is assumed to.
MIXED_AXES: dict[str, Callable[[Node, str], list[tuple[int, ...]]]] = {
    **{op: (lambda node, batch: [_normalized(node.attrs["axes"], node.operands[0].type.rank)])
       for op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min")},
    **{op: (lambda node, batch: [_normalized((node.attrs["axis"],), node.operands[0].type.rank)])
       for op in ("softmax", "log_softmax")},
    "layer_norm": lambda node, batch: [tuple(range(node.operands[0].type.rank - node.operands[1].type.rank,
                                                   node.operands[0].type.rank)), (), ()],
    "matmul": lambda node, batch: [(node.operands[0].type.rank - 1,), (node.operands[1].type.rank - 2,)],
    "linear": lambda node, batch: [(node.operands[0].type.rank - 1,), (0, 1), (0,)][:len(node.operands)],
    "attention": _attention_axes,
    "conv2d": lambda node, batch: [(1, 2, 3), (0, 1, 2, 3)],
    "max_pool2d": lambda node, batch: [(2, 3)],
    "avg_pool2d": lambda node, batch: [(2, 3)],
    "concat": lambda node, batch: [_normalized((node.attrs["axis"],), v.type.rank) for v in node.operands],
    "pad": lambda node, batch: [tuple(i for i in range(node.operands[0].type.rank)
                                      if node.attrs["pads"][2 * i] or node.attrs["pads"][2 * i + 1])],
    "reshape": _reshape_axes,
    **{op: (lambda node, batch: [() for _ in node.operands])
       for op in ("transpose", "broadcast_to", "split", "slice", "gather", "iota", "constant", "transfer")},
}


def batch_axes(value: Value, batch: str) -> tuple[int, ...]:
    """Axes of `value` whose dim is exactly the batch symbol."""
    return tuple(i for i, d in enumerate(value.shape) if isinstance(d, Sym) and str(d) == batch)


def batch_layout(graph: Graph, purpose: str) -> BatchLayout:
    """The batch symbol (the first input's leading symbolic dim) and the batch axes of each input
    and output, or a ShipeiError saying why splitting or padding the batch for `purpose` would
    change results."""
    batch = next((str(v.shape[0]) for v in graph.inputs
                  if v.type.rank and isinstance(v.shape[0], Sym) and str(v.shape[0]) in v.shape[0].symbols), None)
    if batch is None:
        raise ShipeiError(f"{purpose} needs a batch dim: no input of {graph.name} has a shape symbol as its first dim")
    ops = all_ops()
    values = [*graph.inputs, *graph.params, *(r for n in graph.nodes for r in n.results)]
    for v in values:
        if any(isinstance(d, Sym) and batch in d.symbols and str(d) != batch for d in v.shape):
            raise ShipeiError(f"{purpose} cannot split batch dim {batch}: {v.type} uses it in an expression")
    for node in graph.nodes:
        if ops[node.op].fusion in (FusionKind.ELEMWISE, FusionKind.BROADCAST):
            continue
        if node.op not in MIXED_AXES:
            raise ShipeiError(f"{purpose} cannot prove that '{node.op}' keeps batch rows apart", node.loc)
        for v, mixed in zip(node.operands, MIXED_AXES[node.op](node, batch), strict=True):
            if set(mixed) & set(batch_axes(v, batch)):
                raise ShipeiError(f"{purpose}: '{node.op}' combines elements along batch dim {batch}, "
                                  "so splitting the batch would change the result", node.loc)
    return BatchLayout(batch, [batch_axes(v, batch) for v in graph.inputs],
                       [batch_axes(v, batch) for v in graph.outputs])
