"""partition: place every node on a (target, device) and cut the graph into stages.

The request (`PartitionRequest`, on `PassContext.partition`) names the candidate placements, what
each target can lower (its capability table, built by codegen), a device map by module path as
Hugging Face accelerate spells it, and the cost model's figures. Then:

1. Each node may go to the candidates that its hints allow (the source's `on`/`@on`, the device
   map's entry for its module: hard constraints, both) and whose target lowers its op on its
   dtypes. A node with none is an error at its source line, naming why each candidate is out.
2. Among those, the assignment minimizes the estimated run time (`ir.cost`): each node's roofline
   at its placement plus every value's crossings. Chains are solved exactly by dynamic
   programming; other graphs start from the better of that and the best single placement, then
   improve by alpha-expansion moves, each one a minimum cut (Boykov, Veksler and Zabih), and by
   single-node moves on the exact cost, until neither helps.
3. Nodes without operands (constants, iota) are copied to every placement that reads them; a
   value read at another placement goes through a `transfer` node there, one per value and
   placement; the schedule is reordered, stably, so that each placement's nodes run together
   where dependencies allow. Each maximal run of one placement is a stage (`ir.region`).

The decisions and why each was made (hint, device map, capability, cost) are in
`PassContext.results.partition_report`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..cost import HOST, Costs, format_bytes, link, nbytes, node_seconds, transfer_seconds
from ..errors import ShipeiError, did_you_mean
from ..graph import Graph, Node, Value
from ..placement import Placement
from ..region import regions
from ..types import DType
from .manager import Pass, PassContext
from .rewrite import make_node

INF = math.inf


@dataclass
class PartitionRequest:
    """What the partition pass needs from the layers above it: candidates (full placements), each
    target's capability table (op -> dtypes), the device map (module path -> hint; "*" or "" for
    the rest), the shape symbols' values for costing, and the cost figures."""

    placements: Sequence[Placement]
    capabilities: Mapping[str, Mapping[str, frozenset[DType]]]
    device_map: Mapping[str, Placement] = field(default_factory=dict)
    dims: Mapping[str, int] = field(default_factory=dict)
    costs: Costs = field(default_factory=Costs)


@dataclass
class Decision:
    placement: Placement
    reason: str  # "hint", "device map", "capability" or "cost"


@dataclass
class PartitionReport:
    """Each node's placement and why; the stages; the transfers and their bytes."""

    decisions: dict[Node, Decision]
    stages: int
    transfers: list[Node]
    cost: float  # estimated seconds per call

    def summary(self, graph: Graph, dims: Mapping[str, int] | None = None) -> str:
        """`41/44 nodes torch:cpu, 3 jax:cpu, 2 transfers, 64 KiB, zero-copy`."""
        counts: dict[str, int] = {}
        for node in graph.nodes:
            counts[str(node.placement)] = counts.get(str(node.placement), 0) + 1
        parts = sorted(counts.items(), key=lambda kv: -kv[1])
        text = ", ".join(f"{n}/{len(graph.nodes)} nodes {p}" if i == 0 else f"{n} {p}"
                         for i, (p, n) in enumerate(parts))
        moved = sum(nbytes(t.result, dims or {}) for t in self.transfers)
        ways = {_way(t) for t in self.transfers}
        moves = f", {format_bytes(moved)}, {' and '.join(sorted(ways))}" if self.transfers else ""
        return (f"{text}, {self.stages} stage{'s' * (self.stages != 1)}, {len(self.transfers)} "
                f"transfer{'s' * (len(self.transfers) != 1)}{moves}")


def _way(transfer: Node) -> str:
    source = transfer.operands[0].producer.placement if transfer.operands[0].producer else HOST
    way = link(source, transfer.placement, transfer.result.dtype, Costs())
    return "zero-copy" if way is not None and not way.copies else "copied"


class Partition(Pass):
    name = "partition"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        request = ctx.partition
        if request is None:
            raise ShipeiError("pass 'partition' needs placements to choose from",
                              hint="compile with device_map=... (--device-map) or placement hints in the source")
        _drop_transfers(graph)  # partitioned before: placed again, the placements kept as hints
        problem = _Problem(graph, request)
        assignment = problem.solve()
        ctx.results.partition_report = _apply(graph, problem, assignment)
        return graph


# -- the problem ----------------------------------------------------------------------------------

class _Problem:
    """The nodes to place (all but sources), where each may go, and what each choice costs."""

    def __init__(self, graph: Graph, request: PartitionRequest):
        self.graph, self.request = graph, request
        self.costs, self.dims = request.costs, request.dims
        self.places = list(dict.fromkeys(request.placements))
        if not self.places or not all(p.full for p in self.places):
            raise ShipeiError(f"partition candidates must be full placements (target:device), got "
                              f"{', '.join(map(str, self.places)) or 'none'}")
        hints = _device_map_hints(graph, request.device_map)
        self.nodes = [n for n in graph.nodes if n.operands]  # sources are copied where read
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.reasons: list[str] = []
        self.allowed: list[list[int]] = []
        for node in self.nodes:
            allowed, reason = self._allowed(node, hints.get(node))
            self.allowed.append(allowed)
            self.reasons.append(reason)
        k = len(self.places)
        self.unary = [[INF] * k for _ in self.nodes]
        for i, node in enumerate(self.nodes):
            for p in self.allowed[i]:
                place = self.places[p]
                self.unary[i][p] = node_seconds(node, place, self.dims, self.costs) + sum(
                    transfer_seconds(v, HOST, place, self.dims, self.costs) for v in node.operands
                    if v.producer is None and v.param is None) + sum(
                    transfer_seconds(v, place, HOST, self.dims, self.costs) for v in node.results
                    if v in graph.outputs)
        # value -> (producer index, consumer indices): the edges a placement choice pays for
        self.edges: list[tuple[Value, int, list[int]]] = []
        consumers: dict[Value, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for v in dict.fromkeys(node.operands):
                if v.producer is not None and v.producer in self.index:
                    consumers.setdefault(v, []).append(i)
        for v, users in consumers.items():
            self.edges.append((v, self.index[v.producer], users))
        self.touching: list[list[int]] = [[] for _ in self.nodes]  # edges each node is an end of
        for e, (_, producer, users) in enumerate(self.edges):
            for i in {producer, *users}:
                self.touching[i].append(e)
        self.crossing = {v: [[transfer_seconds(v, a, b, self.dims, self.costs) for b in self.places]
                             for a in self.places] for v, _, _ in self.edges}

    def _allowed(self, node: Node, mapped: tuple[str, Placement] | None) -> tuple[list[int], str]:
        """The candidates `node` may take, and why there are no more: its hint, the device map, its
        op, or the cost model choosing freely."""
        why: list[str] = []
        allowed = []
        for p, place in enumerate(self.places):
            if node.placement is not None and not node.placement.allows(place):
                why.append(f"{place}: the source asks for {node.placement}")
            elif (mapped is not None and not mapped[1].allows(place)
                  and (node.placement is None or mapped[0] not in ("*", ""))):  # the source's hint beats "*"
                why.append(f"{place}: the device map puts '{mapped[0] or '*'}' on {mapped[1]}")
            elif not self._lowers(place.target, node):
                dtypes = ", ".join(sorted({str(v.dtype) for v in (*node.operands, *node.results)}))
                why.append(f"{place}: {place.target} cannot lower {node.op} on {dtypes}")
            else:
                allowed.append(p)
        if not allowed:
            raise ShipeiError(f"no placement can run {node.op}: " + "; ".join(why), node.loc,
                              hint="see each target's capability table: shipei.codegen.capabilities()")
        if len(allowed) == len(self.places):
            return allowed, "cost"
        if node.placement is not None and not all(node.placement.allows(p) for p in self.places):
            return allowed, "hint" if len(allowed) == 1 else "hint, then cost"
        if mapped is not None:
            return allowed, "device map" if len(allowed) == 1 else "device map, then cost"
        return allowed, "capability" if len(allowed) == 1 else "capability, then cost"

    def _lowers(self, target: str, node: Node) -> bool:
        dtypes = self.request.capabilities.get(target, {}).get(node.op)
        return dtypes is not None and all(v.dtype in dtypes for v in (*node.operands, *node.results))

    # -- the objective ---------------------------------------------------------------------------
    def cost(self, assignment: list[int]) -> float:
        """Estimated seconds of one call: every node at its placement, every value crossing once to
        each other placement that reads it."""
        return (sum(self.unary[i][p] for i, p in enumerate(assignment))
                + sum(self._edge_cost(e, assignment) for e in range(len(self.edges))))

    def _edge_cost(self, e: int, assignment: list[int]) -> float:
        v, producer, users = self.edges[e]
        source = assignment[producer]
        return sum(self.crossing[v][source][d] for d in {assignment[u] for u in users} - {source})

    # -- solving ---------------------------------------------------------------------------------
    def solve(self) -> list[int]:
        if not self.nodes:
            return []
        starts = [self._best_uniform(), self._chain_dp()]
        best = min((s for s in starts if s is not None), key=self.cost)
        while True:
            improved = self._expand(best)
            improved = self._local(improved)
            if self.cost(improved) >= self.cost(best) - 1e-15:
                return best
            best = improved

    def _best_uniform(self) -> list[int] | None:
        """Every node at one placement, the cheapest such; None if no placement takes every node."""
        options = [[p] * len(self.nodes) for p in range(len(self.places))
                   if all(p in a for a in self.allowed)]
        return min(options, key=self.cost) if options else None

    def _chain_dp(self) -> list[int]:
        """Viterbi over the schedule: exact where each node reads only the node before it (a chain);
        elsewhere a start, charging each crossing from an earlier producer at the placement the
        best path to that producer took."""
        k = len(self.places)
        readers = {i: [] for i in range(len(self.nodes))}
        for v, producer, users in self.edges:
            for u in users:
                readers[u].append((v, producer))
        best = [[INF] * k for _ in self.nodes]
        back: list[list[int]] = [[0] * k for _ in self.nodes]
        for i in range(len(self.nodes)):
            for p in self.allowed[i]:
                prev = [0.0] if i == 0 else [
                    best[i - 1][q] + sum(self.crossing[v][q][p] for v, producer in readers[i] if producer == i - 1)
                    for q in range(k)]
                q = min(range(len(prev)), key=prev.__getitem__)
                far = sum(self.crossing[v][_trace(back, best, producer, i - 1, q)][p]
                          for v, producer in readers[i] if producer < i - 1) if i else 0.0
                best[i][p] = prev[q] + self.unary[i][p] + far
                back[i][p] = q
        p = min(range(k), key=best[-1].__getitem__)
        assignment = [0] * len(self.nodes)
        for i in reversed(range(len(self.nodes))):
            assignment[i] = p
            p = back[i][p]
        return assignment

    def _local(self, assignment: list[int]) -> list[int]:
        """Single-node moves on the exact cost until none helps (each weighed by the edges it touches)."""
        current = list(assignment)
        changed = True
        while changed:
            changed = False
            for i in range(len(self.nodes)):
                was = current[i]
                before = self.unary[i][was] + sum(self._edge_cost(e, current) for e in self.touching[i])
                for p in self.allowed[i]:
                    if p == was:
                        continue
                    current[i] = p
                    after = self.unary[i][p] + sum(self._edge_cost(e, current) for e in self.touching[i])
                    if after < before - 1e-15:
                        was, before, changed = p, after, True
                current[i] = was
        return current

    def _expand(self, assignment: list[int]) -> list[int]:
        """Alpha-expansion: for each placement alpha, the best set of nodes to move to alpha, as a
        minimum s-t cut over the per-edge costs (each reader pays its crossing; the exact cost,
        which pays once per placement, judges the result)."""
        current = list(assignment)
        for alpha in range(len(self.places)):
            trial = self._expansion_move(current, alpha)
            if self.cost(trial) < self.cost(current) - 1e-15:
                current = trial
        return current

    def _expansion_move(self, labels: list[int], alpha: int) -> list[int]:
        n = len(self.nodes)
        source, sink = n, n + 1
        flow = _FlowNetwork(n + 2)
        big = 1e9  # a node that may not take alpha stays: an infinite cost, finitely
        for i in range(n):
            keep = self.unary[i][labels[i]]
            move = self.unary[i][alpha] if alpha in self.allowed[i] else big
            _terminal(flow, i, keep if labels[i] != alpha else 0.0, move if labels[i] != alpha else big, source, sink)
        for v, producer, users in self.edges:
            for u in users:
                i, j = producer, u
                a = self.crossing[v][labels[i]][labels[j]]  # both keep
                b = self.crossing[v][labels[i]][alpha]      # i keeps, j moves
                c = self.crossing[v][alpha][labels[j]]      # i moves, j keeps
                d = 0.0                                     # both move
                # E(x_i, x_j) with x = 1 for "moves to alpha": A + (C-A) x_i + (D-C) x_j + (B+C-A-D) x_j (1 - x_i)
                _terminal(flow, i, 0.0, c - a, source, sink, allow_negative=True)
                _terminal(flow, j, 0.0, d - c, source, sink, allow_negative=True)
                flow.add(i, j, max(b + c - a - d, 0.0))  # clipped where it is not submodular
        moved = flow.min_cut_source_side(source, sink)
        return [labels[i] if i in moved else alpha for i in range(n)]


def _trace(back: list[list[int]], best: list[list[float]], target: int, start: int, q: int) -> int:
    """The placement of node `target` on the best path that ends at node `start` with placement `q`."""
    p = q
    for i in range(start, target, -1):
        p = back[i][p]
    return p


def _terminal(flow: _FlowNetwork, i: int, keep: float, move: float, source: int, sink: int,
              allow_negative: bool = False) -> None:
    """Cost `keep` if node i keeps its label (stays on the source side), `move` if it takes alpha."""
    if allow_negative:
        low = min(keep, move)
        keep, move = keep - low, move - low
    # source side = keeps: cutting i->sink costs `keep`; sink side = moves: cutting source->i costs `move`
    flow.add(i, sink, keep)
    flow.add(source, i, move)


class _FlowNetwork:
    """Dinic's maximum flow on a small dense-enough graph; the minimum cut is what the moves need."""

    def __init__(self, n: int):
        self.adj: list[list[int]] = [[] for _ in range(n)]
        self.to: list[int] = []
        self.cap: list[float] = []

    def add(self, u: int, v: int, capacity: float) -> None:
        if capacity <= 0:
            return
        self.adj[u].append(len(self.to))
        self.to.append(v)
        self.cap.append(capacity)
        self.adj[v].append(len(self.to))
        self.to.append(u)
        self.cap.append(0.0)

    def min_cut_source_side(self, s: int, t: int) -> set[int]:
        eps = 1e-18
        while True:
            level = self._levels(s, eps)
            if level[t] < 0:
                break
            it = [0] * len(self.adj)
            while self._augment(s, t, INF, level, it, eps) > eps:
                pass
        return {u for u, lv in enumerate(self._levels(s, eps)) if lv >= 0}

    def _levels(self, s: int, eps: float) -> list[int]:
        level = [-1] * len(self.adj)
        level[s] = 0
        queue = [s]
        for u in queue:
            for e in self.adj[u]:
                if self.cap[e] > eps and level[self.to[e]] < 0:
                    level[self.to[e]] = level[u] + 1
                    queue.append(self.to[e])
        return level

    def _augment(self, s: int, t: int, limit: float, level: list[int], it: list[int], eps: float) -> float:
        """One blocking-flow path, found iteratively (no recursion on long chains)."""
        path: list[int] = []
        u = s
        while True:
            if u == t:
                pushed = min([limit] + [self.cap[e] for e in path])
                for e in path:
                    self.cap[e] -= pushed
                    self.cap[e ^ 1] += pushed
                return pushed
            while it[u] < len(self.adj[u]):
                e = self.adj[u][it[u]]
                if self.cap[e] > eps and level[self.to[e]] == level[u] + 1:
                    break
                it[u] += 1
            else:
                if not path:
                    return 0.0
                level[u] = -1  # a dead end
                e = path.pop()
                u = self.to[e ^ 1]
                it[u] += 1
                continue
            path.append(e)
            u = self.to[e]


# -- device maps ----------------------------------------------------------------------------------

def _device_map_hints(graph: Graph, device_map: Mapping[str, Placement]) -> dict[Node, tuple[str, Placement]]:
    """Each node's device-map entry (the longest module prefix that names it, else "*" or ""), and
    an error for an entry that names no module of the model."""
    if not device_map:
        return {}
    modules = {""} | {p for n in graph.nodes for p in _prefixes(n.module)} | {
        q for v in graph.params for q in _prefixes(v.name.rpartition(".")[0])}
    for key in device_map:
        if key not in ("*", "") and key not in modules:
            known = sorted(m for m in modules if m)
            raise ShipeiError(f"the device map names '{key}', which is not a module of {graph.name}", graph.loc,
                              hint=did_you_mean(key, known, f"its modules are {', '.join(known[:12])}"
                                                            + (", ..." if len(known) > 12 else "")))
    out = {}
    for node in graph.nodes:
        key = next((p for p in _prefixes(node.module, longest_first=True) if p in device_map), None)
        if key is None:
            key = "*" if "*" in device_map else "" if "" in device_map else None
        if key is not None:
            out[node] = (key, device_map[key])
    return out


def _prefixes(path: str, longest_first: bool = False) -> list[str]:
    """`h.0.attn` -> `h`, `h.0`, `h.0.attn` (or the other way round)."""
    if not path:
        return []
    parts = path.split(".")
    out = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return out[::-1] if longest_first else out


# -- applying the assignment ----------------------------------------------------------------------

def _apply(graph: Graph, problem: _Problem, assignment: list[int]) -> PartitionReport:
    decisions = {}
    for i, node in enumerate(problem.nodes):
        node.placement = problem.places[assignment[i]]
        decisions[node] = Decision(node.placement, problem.reasons[i])
    placed = [n.placement for n in problem.nodes]
    preferred = sorted(problem.places, key=lambda p: -placed.count(p))  # the most used first
    nodes = _copy_sources(graph, preferred, lambda place, node: problem._lowers(place.target, node))
    transfers = _insert_transfers(graph, nodes)
    graph.nodes = _schedule(graph.nodes)
    for node in graph.nodes:
        decisions.setdefault(node, Decision(node.placement, "transfer" if node in transfers else "where read"))
    return PartitionReport(decisions, len(regions(graph, lambda n: n.placement)), transfers,
                           problem.cost(assignment))


def _drop_transfers(graph: Graph) -> None:
    handed = {n.result: n.operands[0] for n in graph.nodes if n.op == "transfer"}
    graph.nodes = [n for n in graph.nodes if n.op != "transfer"]
    for node in graph.nodes:
        node.operands = [handed.get(v, v) for v in node.operands]
    graph.outputs = [handed.get(v, v) for v in graph.outputs]


def _copy_sources(graph: Graph, preferred: list[Placement], lowers: Callable[[Placement, Node], bool]) -> list[Node]:
    """Nodes without operands (constants, iota), one copy per placement that reads them; one that
    only the graph's outputs read goes to the first `preferred` placement that `lowers` it."""
    users = graph.users()
    out: list[Node] = []
    for node in graph.nodes:
        if node.operands:
            out.append(node)
            continue
        readers = users.get(node.result, [])
        places = list(dict.fromkeys(u.placement for u in readers if u.operands)) or [
            next((p for p in preferred if lowers(p, node)), preferred[0])]
        for k, place in enumerate(places):
            copy = node if k == 0 else make_node(node.op, [], node.attrs, like=node)
            copy.placement = place
            out.append(copy)
            if k:
                for u in readers:
                    if u.placement == place:
                        u.operands = [copy.result if v is node.result else v for v in u.operands]
    graph.nodes = out
    return out


def _insert_transfers(graph: Graph, nodes: list[Node]) -> list[Node]:
    """A `transfer` node before the first reader of a value at each other placement."""
    out: list[Node] = []
    transfers: list[Node] = []
    made: dict[tuple[Value, Placement], Value] = {}
    for node in nodes:
        for v in dict.fromkeys(node.operands):
            if v.producer is None or v.producer.placement == node.placement:
                continue
            key = (v, node.placement)
            if key not in made:
                t = make_node("transfer", [v], {}, like=node)
                t.placement, t.group, t.module = node.placement, None, v.producer.module
                out.append(t)
                transfers.append(t)
                made[key] = t.result
            node.operands = [made[key] if w is v else w for w in node.operands]
        out.append(node)
    graph.nodes = out
    return transfers


def _schedule(nodes: list[Node]) -> list[Node]:
    """A topological order that keeps each placement's nodes together where it can: among ready
    nodes, those of the placement running now first, then the earliest in the old order."""
    position = {n: i for i, n in enumerate(nodes)}
    waiting = {n: len({v.producer for v in n.operands if v.producer in position}) for n in nodes}
    readers: dict[Node, list[Node]] = {n: [] for n in nodes}
    for n in nodes:
        for p in {v.producer for v in n.operands if v.producer in position}:
            readers[p].append(n)
    ready = {n for n in nodes if waiting[n] == 0}
    order: list[Node] = []
    current: Placement | None = None
    while ready:
        same = [n for n in ready if n.placement == current]
        node = min(same or ready, key=position.__getitem__)
        ready.remove(node)
        order.append(node)
        current = node.placement
        for r in readers[node]:
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.add(r)
    return order
