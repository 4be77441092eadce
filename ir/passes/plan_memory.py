"""plan-memory: liveness over the schedule and buffer reuse by size classes; reports peak bytes.

Every activation (a node result that depends on a graph input; values of weights and constants
alone are held like weights) needs a buffer from the node that makes it to the last node that
reads it; graph outputs live to the end. Walking the schedule, a value takes a free buffer of
its size class, else a new one, and its buffer is freed after its last reader. An elementwise or
broadcast op may write into a dying operand's buffer (in place). Size classes are four per power
of two (`size_class`), as caching allocators round.

The plan is recorded in `ctx.results.memory_plan` as a `MemoryPlan`: naive bytes (every value
in its own buffer of its size class, none freed), planned bytes (the buffers the plan allocates)
and the live-bytes peak (exact sizes: a lower bound for any plan), the live peak of a program that
allocates every result anew and frees it after its last reader (an eager framework without the
plan: no result written over an operand), and the most workspace an op
holds while it runs (`OpDef.workspace`: attention's scores), which one scratch buffer serves.
Shapes need values for their symbols: `ctx.settings.dims` (e.g. `{"B": 8, "T": 64}`); a symbol
not given there is 1. `plan_memory(graph, dims)` gives the same plan outside a pipeline, e.g. for
the runtime to estimate memory at a batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..graph import Graph, Node, Value
from ..registry import FusionKind, WorkspaceRule, get_op
from ..types import eval_dim
from .manager import Pass, PassContext
from .rewrite import elements


@dataclass
class MemoryPlan:
    """Activation memory of one schedule at concrete dims."""

    dims: dict[str, int]
    naive_bytes: int
    planned_bytes: int
    peak_live_bytes: int
    workspace_bytes: int = 0  # the most any op holds while it runs beyond its operands and results
    peak_fresh_bytes: int = 0  # the live peak when every result is a new allocation (eager, no plan)
    buffers: list[int] = field(default_factory=list)          # size of each buffer, in bytes
    assignment: dict[Value, int] = field(default_factory=dict, repr=False)  # value -> buffer

    @property
    def ratio(self) -> float:
        """Planned over naive bytes (1.0 for a graph without intermediates)."""
        return self.planned_bytes / self.naive_bytes if self.naive_bytes else 1.0

    def summary(self) -> str:
        return (f"activations: naive {self.naive_bytes:,} B, planned {self.planned_bytes:,} B "
                f"({self.ratio:.2f}x) in {len(self.buffers)} buffers, live peak {self.peak_live_bytes:,} B"
                + (f", workspace {self.workspace_bytes:,} B" if self.workspace_bytes else ""))


def size_class(nbytes: int) -> int:
    """`nbytes` rounded up to one of four classes per power of two (64 bytes at least)."""
    if nbytes <= 64:
        return 64
    step = 1 << max((nbytes - 1).bit_length() - 3, 0)
    return -(-nbytes // step) * step


def _activations(graph: Graph) -> list[Value]:
    """Node results that depend on a graph input; the rest (constants, transposed weights) are
    computed from weights alone, which a target holds like the weights or folds away."""
    dynamic: set[Value] = set(graph.inputs)
    out = []
    for node in graph.nodes:
        if any(v in dynamic for v in node.operands):
            dynamic.update(node.results)
            out.extend(node.results)
    return out


def plan_memory(graph: Graph, dims: Mapping[str, int] | None = None, fused: frozenset[Value] = frozenset(),
                scratch: Callable[[Node, Mapping[str, int]], int] | None = None,
                workspace: Mapping[str, WorkspaceRule] | None = None) -> MemoryPlan:
    """The buffer plan of `graph`'s schedule with symbols bound to `dims` (others 1). `fused` are
    results an eager program never holds (a kernel computes them on the way to the next node's
    result): left out of its peak, `peak_fresh_bytes`; `scratch(node, dims)`, what its kernel for a
    node allocates beyond the result while the operands are held, is in that peak. `workspace`
    replaces ops' `OpDef.workspace` where a target's kernel holds other than the registry says."""
    env = dict.fromkeys(graph.symbols(), 1)
    env.update(dims or {})
    values = _activations(graph)
    nbytes = {v: elements(v.type, env) * v.dtype.itemsize for v in values}
    reads = graph.last_reads()
    last = {v: reads.get(v, -1) for v in values}
    plan = MemoryPlan(dict(env), sum(size_class(n) for n in nbytes.values()), 0, 0)
    free: dict[int, list[int]] = {}
    live = fresh = 0
    for i, node in enumerate(graph.nodes):
        read_last = [v for v in dict.fromkeys(node.operands) if v in last and last[v] == i]
        made = [r for r in node.results if r in nbytes]
        dying = list(read_last)
        donors = list(read_last) if get_op(node.op).fusion in (FusionKind.ELEMWISE, FusionKind.BROADCAST) else []
        for r in made:
            size = size_class(nbytes[r])
            donor = next((v for v in donors if plan.buffers[plan.assignment[v]] == size), None)
            if donor is not None:  # in place: the result overwrites a dying operand
                donors.remove(donor)
                dying.remove(donor)
                live -= nbytes[donor]
                plan.assignment[r] = plan.assignment[donor]
            elif free.get(size):
                plan.assignment[r] = free[size].pop()
            else:
                plan.assignment[r] = len(plan.buffers)
                plan.buffers.append(size)
            live += nbytes[r]
            if last[r] == -1:  # nothing reads it
                dying.append(r)
        fresh += sum(nbytes[r] for r in made if r not in fused)
        plan.peak_live_bytes = max(plan.peak_live_bytes, live)
        plan.peak_fresh_bytes = max(plan.peak_fresh_bytes, fresh + (scratch(node, env) if scratch else 0))
        plan.workspace_bytes = max(plan.workspace_bytes, _workspace(node, env, workspace or {}))
        fresh -= sum(nbytes[v] for v in (*read_last, *(r for r in made if last[r] == -1)) if v not in fused)
        for v in dying:
            live -= nbytes[v]
            free.setdefault(plan.buffers[plan.assignment[v]], []).append(plan.assignment[v])
    plan.planned_bytes = sum(plan.buffers)
    return plan


def _workspace(node: Node, env: Mapping[str, int], rules: Mapping[str, WorkspaceRule]) -> int:
    """Bytes `node`'s op holds while it runs (its rule in `rules`, else its `OpDef.workspace`), at the
    result's dtype."""
    rule = rules[node.op] if node.op in rules else get_op(node.op).workspace
    if rule is None or not node.results:
        return 0
    operands = [tuple(eval_dim(d, env) for d in v.shape) for v in node.operands]
    results = [tuple(eval_dim(d, env) for d in v.shape) for v in node.results]
    return int(rule(operands, results, node.attrs)) * node.results[0].dtype.itemsize


class PlanMemory(Pass):
    name = "plan-memory"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        ctx.results.memory_plan = plan_memory(graph, ctx.settings.dims)
        return graph
