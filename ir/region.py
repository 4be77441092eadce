"""Regions: runs of consecutive nodes that one unit computes — a fused group (one function in a
generated program) or a pipeline stage (one program, on one placement).

A region reads values from outside (graph inputs, params, results of earlier nodes) and hands on
the results that later nodes or the graph's outputs read. `regions` cuts a schedule into maximal
runs by a key (`Node.group`, `Node.placement`); `region_graph` makes one a standalone graph.
"""

from __future__ import annotations

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


def regions(graph: Graph, key: Callable[[Node], Hashable]) -> list[Region]:
    """The schedule cut into maximal runs of nodes with one `key`."""
    runs: list[list[Node]] = []
    for node in graph.nodes:
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


def region_graph(graph: Graph, region: Region, name: str) -> tuple[Graph, list[Value]]:
    """A standalone graph computing `region.outputs` from `region.inputs`: graph inputs and values of
    earlier regions become its inputs (named as in `graph`, or `c0`, `c1`, ...), params stay params.
    Returns it and, for each of its inputs, the value of `graph` that feeds it."""
    computed = {r for n in region.nodes for r in n.results}
    cuts = {v for v in region.inputs if v.producer is not None and v not in computed}
    part, sources = extract(graph, region.outputs, cuts)
    part.name = name
    return part, sources
