"""Regions: runs of consecutive nodes that one unit computes — a fused group (one function in a
generated program) or a pipeline stage (one program, on one placement).

A region reads values from outside (graph inputs, params, results of earlier nodes) and hands on
the results that later nodes or the graph's outputs read. `regions` cuts a schedule into maximal
runs by a key (`Node.group`, `Node.placement`); `region_graph` makes one a standalone graph.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .graph import Graph, Node, Value
from .subgraph import extract


@dataclass(eq=False)
class Region:
    """Consecutive nodes of a graph's schedule; `inputs` are the values they read from outside, in
    first-use order, and `outputs` their results read after them, in definition order."""

    key: Hashable
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]


def regions(graph: Graph, key: Callable[[Node], Hashable], nodes: list[Node] | None = None) -> list[Region]:
    """The schedule (or the consecutive `nodes` of it) cut into maximal runs of nodes with one `key`."""
    runs: list[list[Node]] = []
    for node in graph.nodes if nodes is None else nodes:
        if runs and key(runs[-1][-1]) == key(node):
            runs[-1].append(node)
        else:
            runs.append([node])
    last_read = graph.last_reads()
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    out = []
    for run in runs:
        inside = {r for n in run for r in n.results}
        inputs = list(dict.fromkeys(v for n in run for v in n.operands if v not in inside))
        end = position[id(run[-1])]
        outputs = [r for n in run for r in n.results if last_read.get(r, -1) > end]
        out.append(Region(key(run[0]), run, inputs, outputs))
    return out


def layer_calls(graph: Graph, min_nodes: int = 2) -> dict[Node, tuple[str, int]]:
    """The calls of repeated layers: node -> (its layer's path, the call's number), for each node
    that one call of a layer instance built, where at least two calls of one definition (two
    instances, or one called twice) compute the same thing on values of the same types, with at
    least `min_nodes` nodes each. The outermost such layers are taken (a Block, not the LayerNorm
    inside it); a call is a maximal run of consecutive nodes under the instance's path
    (`Node.module`, `Graph.layers`), and is left out where it would cut a fused group."""
    out: dict[Node, tuple[str, int]] = {}
    taken: set[str] = set()
    numbers = itertools.count()
    sizes = Counter(n.group for n in graph.nodes if n.group is not None)
    for depth in sorted({path.count(".") for path in graph.layers}):
        calls: dict[tuple[str, str], list[tuple[str, list[Node]]]] = {}  # (definition, what it computes) -> calls
        for path, run in _runs(graph, depth, taken):
            whole = all(sum(m.group == g for m in run) == sizes[g] for g in {n.group for n in run} - {None})
            if len(run) >= min_nodes and whole:
                calls.setdefault((graph.layers[path], _signature(run, path)), []).append((path, run))
        for same in calls.values():
            if len(same) < 2:
                continue
            for path, run in same:
                taken.add(path)
                out.update(dict.fromkeys(run, (path, next(numbers))))
    return out


def _signature(run: list[Node], path: str) -> str:
    """What a call computes, independent of the values it reads and of its layer's path: its ops,
    attributes and types, operands by position (its own results, its layer's params by their
    names within the layer, other values by first use)."""
    refs: dict[Value, str] = {}
    lines = []
    for i, node in enumerate(run):
        operands = []
        for v in node.operands:
            if v not in refs:
                inner = v.param is not None and v.name.startswith(path + ".")
                refs[v] = f"param {v.name[len(path) + 1:]}" if inner else f"input {len(refs)}: {v.type}"
            operands.append(refs[v])
        lines.append(f"{node.op}({', '.join(operands)}) {sorted(node.attrs.items(), key=str)!r} "
                     f"-> {', '.join(str(r.type) for r in node.results)}")
        refs.update({r: f"%{i}.{k}" for k, r in enumerate(node.results)})
    return "\n".join(lines)


def _runs(graph: Graph, depth: int, taken: set[str]) -> list[tuple[str, list[Node]]]:
    """The maximal runs of consecutive nodes under one layer instance at `depth` (its path has
    `depth` dots), outside the instances already `taken`; in one pass over the schedule."""
    runs: list[tuple[str, list[Node]]] = []
    previous = None
    for node in graph.nodes:
        parts = node.module.split(".")
        path = ".".join(parts[:depth + 1]) if len(parts) > depth else None
        if path not in graph.layers or any(".".join(parts[:k]) in taken for k in range(1, depth + 2)):
            path = None
        if path is not None:
            if path == previous:
                runs[-1][1].append(node)
            else:
                runs.append((path, [node]))
        previous = path
    return runs


def region_graph(graph: Graph, region: Region, name: str) -> tuple[Graph, list[Value]]:
    """A standalone graph computing `region.outputs` from `region.inputs`: graph inputs and values of
    earlier regions become its inputs (named as in `graph`, or `c0`, `c1`, ...), params stay params.
    Returns it and, for each of its inputs, the value of `graph` that feeds it."""
    computed = {r for n in region.nodes for r in n.results}
    cuts = {v for v in region.inputs if v.producer is not None and v not in computed}
    part, sources = extract(graph, region.outputs, cuts)
    part.name = name
    return part, sources
