"""Where an eager target's results go: over a dying operand (in place), into a buffer the program
keeps between calls (planned), or into a new tensor. The memory plan made safe for a framework
whose views share storage (torch).

A node's result overwrites operand k (0, or 1 of a commutative op) when

- the target spells the op in place (`Target.inplace`) and the result has the operand's type, in
  a float dtype (in place, integer division or type promotion would change the result);
- the operand's storage is the program's own: an op the target computes into a new tensor
  (`Target.fresh`) made it, or an earlier in-place write into such storage, or the caller
  donated it (`Graph.donated`: an optimizer's params, gradients and state). Not another graph
  input, a weight, a constant or a view, nor a value computed from weights and constants alone:
  freezing a traced program (torch's oneDNN graph) folds it into a constant, and writing into
  that constant crashes the fuser's graph at its second call;
- nothing reads that storage after this node: not the operand, not a value sharing it (the
  result of an op outside `fresh` may be a view of its first operand, as a reshape or an
  eval-mode dropout is), not a graph output; and no other operand of the node shares it.

Else, with `keep`, a node the target can write into a given tensor (`Target.into`, results in
`Target.into_dtypes`) takes a kept buffer of its type that no live value shares, or a new one,
unless a graph output may be or view its storage: the caller owns outputs. Kept buffers spare the
allocator: torch's CPU tensors come from malloc, which hands large blocks back to the system and
page-faults them in again on every call. TVM's graph executor and ONNX Runtime preallocate their
plans for the same reason.

Autograd cannot differentiate through an overwritten value or an `out=` write, so only inference
programs (-O3, which plans memory) ask for either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..ir.graph import Graph, Node, Value
from ..ir.registry import get_op
from ..ir.types import TensorType

if TYPE_CHECKING:
    from .writer import Target


@dataclass
class BufferPlan:
    """Where the results of one schedule go besides new tensors."""

    writes: dict[Node, int] = field(default_factory=dict)  # node -> the operand its result overwrites
    slots: dict[Node, int] = field(default_factory=dict)   # node -> the kept buffer it writes into
    slot_types: list[TensorType] = field(default_factory=list)  # each kept buffer's type


def plan_buffers(graph: Graph, target: Target, last: dict[Value, int], *, reuse: bool = True,
                 keep: bool = False, donated: Sequence[Value] = ()) -> BufferPlan:
    """In-place writes (with `reuse`) and kept buffers (with `keep`) for `graph` on `target`.
    `last` maps each value to its last reader's schedule index (outputs: past the end);
    `donated` inputs are the program's to overwrite."""
    plan = BufferPlan()
    escaping = _reaching_outputs(graph, target) if keep else set()
    storage: dict[Value, Value] = {v: v for v in donated}  # value -> the storage it is or may view
    whole: set[Value] = set(donated)  # values that are all of the program's own storage
    read_until: dict[Value, int] = {v: last.get(v, -1) for v in donated}  # storage -> its last reader
    held: dict[int, Value] = {}        # kept buffer -> the storage now in it
    varying = _varying(graph)          # values that depend on an input
    free: dict[TensorType, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        for slot in [s for s, root in held.items() if read_until[root] < i]:
            free.setdefault(plan.slot_types[slot], []).append(slot)
            del held[slot]
        k = _donor(node, i, target, storage, whole, read_until, last) if reuse else None
        if k is not None:
            plan.writes[node] = k
        elif keep and _keepable(node, target, escaping):
            slot = _take(plan, free, node.result.type)
            plan.slots[node] = slot
            held[slot] = node.result
        for r in node.results:
            if k is not None:
                storage[r] = storage[node.operands[k]]
                whole.add(r)
            elif node.op in target.fresh or node in plan.slots:
                storage[r] = r
                if r in varying:
                    whole.add(r)
            elif not node.operands:  # a constant: the module's buffer, never written
                storage[r] = r
            else:  # may be a view of (or be) its first operand
                storage[r] = storage.get(node.operands[0], node.operands[0])
            read_until[storage[r]] = max(read_until.get(storage[r], -1), last.get(r, -1))
    return plan


def _varying(graph: Graph) -> set[Value]:
    """The values that depend on a graph input: the others are the same at every call."""
    varying = set(graph.inputs)
    for node in graph.nodes:
        if any(v in varying for v in node.operands):
            varying.update(node.results)
    return varying


def _take(plan: BufferPlan, free: dict[TensorType, list[int]], type_: TensorType) -> int:
    """A free kept buffer of `type_`, else a new one."""
    if free.get(type_):
        return free[type_].pop()
    plan.slot_types.append(type_)
    return len(plan.slot_types) - 1


def _keepable(node: Node, target: Target, escaping: set[Value]) -> bool:
    return (node.op in target.into and len(node.results) == 1 and node.result.dtype in target.into_dtypes
            and node.result not in escaping and like_operand(node) is not None)


def like_operand(node: Node) -> Value | None:
    """The first operand of the result's dtype: a kept buffer takes its dtype and device at run
    time, so that a model moved to another dtype or device keeps working."""
    return next((v for v in node.operands if v.dtype == node.result.dtype), None)


def _reaching_outputs(graph: Graph, target: Target) -> set[Value]:
    """Values whose storage a graph output may be: the outputs, what they may view, and what an
    in-place write may have turned into them."""
    out: set[Value] = set()
    stack = list(graph.outputs)
    while stack:
        v = stack.pop()
        if v in out:
            continue
        out.add(v)
        node = v.producer
        if node is None or not node.operands:
            continue
        if node.op in target.inplace:
            stack.extend(node.operands[:2])
        elif node.op not in target.fresh:
            stack.append(node.operands[0])
    return out


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
