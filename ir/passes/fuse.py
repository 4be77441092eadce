"""fuse: group nodes into regions by TVM's fusion rules; each region becomes one function.

Walking the schedule, a node joins the groups of the nodes that produce its operands when its
fusion kind (the registry's `FusionKind`) allows, as in TVM's FuseOps:

- elementwise and broadcast ops join a group of elementwise, broadcast or injective ops, or the
  epilogue of a complex-out-fusable op (matmul, conv, pool: `matmul -> add -> relu`);
- injective ops (reshape, transpose, slice, ...) join groups of elementwise, broadcast and
  injective ops only;
- a reduction joins such a group too and ends it: nothing joins a group after its reduction;
- complex-out-fusable ops start a group; opaque ops (softmax, layer_norm) stay alone;
- constants are never grouped: every target holds them outside the computation.

A group holds at most one complex-out-fusable op and at most `ctx.settings.max_group_size`
nodes (default 32), all of one placement (a group is one function of one program). Joining is
refused when it would make a cycle between regions (a path that leaves the group and comes
back). Groups of one node are left ungrouped. Finally the nodes are reordered, stably, so that
each group is one run of consecutive nodes, and groups are numbered 0, 1, ... in schedule order.
"""

from __future__ import annotations

import heapq

from ..graph import Graph, Node
from ..registry import FusionKind, get_op
from .manager import Pass, PassContext

ELEMENTWISE = (FusionKind.ELEMWISE, FusionKind.BROADCAST)


def _joins(node_kind: FusionKind, group_kind: FusionKind) -> bool:
    """May a node of `node_kind` join a group whose pattern is `group_kind`?"""
    if node_kind in ELEMENTWISE:
        return group_kind <= FusionKind.INJECTIVE or group_kind is FusionKind.OUT_FUSABLE
    if node_kind in (FusionKind.INJECTIVE, FusionKind.REDUCTION):
        return group_kind <= FusionKind.INJECTIVE
    return False


def _combine(a: FusionKind, b: FusionKind) -> FusionKind | None:
    """The pattern of two merged groups, or None when they may not merge (two anchors)."""
    low, high = sorted((a, b))
    if high <= FusionKind.INJECTIVE or (high is FusionKind.OUT_FUSABLE and low in ELEMENTWISE):
        return high
    if high is FusionKind.REDUCTION and low <= FusionKind.INJECTIVE:
        return high
    return None


class _Groups:
    """Union of node indices into groups, each with its pattern; ids are the first member's index."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes
        index = {id(n): i for i, n in enumerate(nodes)}
        self.producers = [sorted({index[id(v.producer)] for v in n.operands if v.producer is not None
                                  and id(v.producer) in index}) for n in nodes]
        self.users: list[list[int]] = [[] for _ in nodes]
        for i, ps in enumerate(self.producers):
            for p in ps:
                self.users[p].append(i)
        self.of = list(range(len(nodes)))
        self.members = {i: [i] for i in range(len(nodes))}
        self.pattern = {i: get_op(n.op).fusion for i, n in enumerate(nodes)}

    def merge(self, a: int, b: int, pattern: FusionKind) -> int:
        keep, gone = min(a, b), max(a, b)
        moved = self.members.pop(gone)
        for m in moved:
            self.of[m] = keep
        self.members[keep] = sorted(self.members[keep] + moved)
        self.pattern[keep] = pattern
        return keep

    def cycle(self, group: set[int], upto: int) -> bool:
        """Would `group` (node indices <= upto) as one region lie on a cycle of regions?"""
        seen: set[int] = set()
        stack = [u for m in group for u in self.users[m] if u not in group]
        while stack:
            j = stack.pop()
            if j > upto or j in seen:
                continue
            for m in self.members[self.of[j]]:
                seen.add(m)
                for u in self.users[m]:
                    if u in group:
                        return True
                    if u not in seen:
                        stack.append(u)
        return False


class Fuse(Pass):
    name = "fuse"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        limit = ctx.settings.max_group_size
        nodes = graph.nodes
        groups = _Groups(nodes)
        for i, node in enumerate(nodes):
            kind = groups.pattern[i]
            if node.op == "constant" or kind >= FusionKind.OUT_FUSABLE:
                continue
            candidates = sorted({groups.of[p] for p in groups.producers[i]
                                 if nodes[p].op != "constant" and nodes[p].placement == node.placement}, reverse=True)
            for g in candidates:
                g = groups.of[g]
                mine = groups.of[i]
                if g == mine or not _joins(kind, groups.pattern[g]):
                    continue
                pattern = _combine(groups.pattern[mine], groups.pattern[g])
                merged = set(groups.members[mine]) | set(groups.members[g])
                if pattern is None or len(merged) > limit or groups.cycle(merged, i):
                    continue
                groups.merge(mine, g, pattern)
        graph.nodes = _schedule(groups)
        return graph


def _schedule(groups: _Groups) -> list[Node]:
    """Nodes reordered so each group is contiguous (stable, topological), groups numbered in order."""
    nodes = groups.nodes
    units = sorted(groups.members)  # a unit is a group, named by its first member
    deps: dict[int, set[int]] = {u: set() for u in units}
    for i, ps in enumerate(groups.producers):
        for p in ps:
            if groups.of[p] != groups.of[i]:
                deps[groups.of[i]].add(groups.of[p])
    waiting = {u: len(d) for u, d in deps.items()}
    dependents: dict[int, list[int]] = {u: [] for u in units}
    for u, d in deps.items():
        for p in d:
            dependents[p].append(u)
    ready = [u for u in units if not waiting[u]]
    heapq.heapify(ready)
    out: list[Node] = []
    next_id = 0
    while ready:
        u = heapq.heappop(ready)
        members = groups.members[u]
        group = None
        if len(members) > 1:
            group, next_id = next_id, next_id + 1
        for m in members:
            nodes[m].group = group
            out.append(nodes[m])
        for d in dependents[u]:
            waiting[d] -= 1
            if not waiting[d]:
                heapq.heappush(ready, d)
    assert len(out) == len(nodes), "fusion made a cycle between groups"
    return out
