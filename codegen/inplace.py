"""Which results an eager target may write over a dying operand: the memory plan's in-place
reuse made safe for a framework whose views share storage (torch).

A node's result overwrites operand k (0, or 1 of a commutative op) when

- the target spells the op in place (`Target.inplace`) and the result has the operand's type, in
  a float dtype (in place, integer division or type promotion would change the result);
- the operand's storage is the program's own: an op the target computes into a new tensor
  (`Target.fresh`) made it, or an earlier in-place write into such storage. Not a graph input,
  a weight, a constant or a view;
- nothing reads that storage after this node: not the operand, not a value sharing it (the
  result of an op outside `fresh` may be a view of its first operand, as a reshape or an
  eval-mode dropout is), not a graph output; and no other operand of the node shares it.

TVM's graph executor and Inductor reuse dead buffers the same way. Autograd cannot differentiate
through an overwritten value, so only inference programs (-O3, which plans memory) ask for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ir.graph import Graph, Node, Value
from ..ir.registry import get_op

if TYPE_CHECKING:
    from .writer import Target


def inplace_writes(graph: Graph, target: Target, last: dict[Value, int]) -> dict[Node, int]:
    """node -> the index of the operand its result overwrites, for every node that may. `last`
    maps each value to its last reader's schedule index (outputs: past the end)."""
    storage: dict[Value, Value] = {}  # value -> the fresh result whose storage it is or may view
    whole: set[Value] = set()         # values that are all of the program's own storage
    read_until: dict[Value, int] = {}  # storage -> the last schedule index reading it
    writes: dict[Node, int] = {}
    for i, node in enumerate(graph.nodes):
        k = _donor(node, i, target, storage, whole, read_until, last)
        if k is not None:
            writes[node] = k
        for r in node.results:
            if k is not None:
                storage[r] = storage[node.operands[k]]
                whole.add(r)
            elif node.op in target.fresh:
                storage[r] = r
                whole.add(r)
            elif not node.operands:  # a constant: the module's buffer, never written
                storage[r] = r
            else:  # may be a view of (or be) its first operand
                storage[r] = storage.get(node.operands[0], node.operands[0])
            read_until[storage[r]] = max(read_until.get(storage[r], -1), last.get(r, -1))
    return writes


def _donor(node: Node, i: int, target: Target, storage: dict[Value, Value], whole: set[Value],
           read_until: dict[Value, int], last: dict[Value, int]) -> int | None:
    """The operand `node` may overwrite, if any."""
    if node.op not in target.inplace or len(node.results) != 1 or not node.result.dtype.is_float:
        return None
    positions = (0, 1) if "commutative" in get_op(node.op).traits else (0,)
    for k in positions[:len(node.operands)]:
        v = node.operands[k]
        if v not in whole or v.type != node.result.type or last[v] != i or read_until[storage[v]] > i:
            continue
        if all(storage.get(u, u) is not storage[v] for j, u in enumerate(node.operands) if j != k):
            return k
    return None
