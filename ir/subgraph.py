"""Parts of a graph: the values some outputs depend on, and a standalone graph computing them.

The test tooling shrinks a failing graph to the part that still fails; the runtime computes a
gather's indices ahead of a target by running the reference on the part that produces them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .graph import Graph, Node, Value


def cone(outputs: Sequence[Value], cuts: Collection[Value] = frozenset()) -> set[Value]:
    """The values `outputs` depend on, not looking past the values in `cuts`."""
    needed: set[Value] = set()
    stack = list(outputs)
    while stack:
        v = stack.pop()
        if v not in needed:
            needed.add(v)
            if v.producer is not None and v not in cuts:
                stack.extend(v.producer.operands)
    return needed


def extract(graph: Graph, outputs: Sequence[Value],
            cuts: Collection[Value] = frozenset()) -> tuple[Graph, list[Value]]:
    """A new graph computing `outputs` of `graph` from the nodes of their cone, copied.

    Each value in `cuts` becomes a graph input (named `c0`, `c1`, ...), so the nodes that computed
    it drop out; the graph inputs and params the cone reads are kept, by name. Returns the graph
    and, for each of its inputs, the value of `graph` it stands for: the caller supplies its array.
    """
    needed = cone(outputs, cuts)
    out = Graph(graph.name)
    new: dict[Value, Value] = {}
    sources: list[Value] = []

    def add_input(v: Value, name: str | None) -> None:
        new[v] = Value(v.type, name=name)
        out.inputs.append(new[v])
        sources.append(v)

    for v in graph.inputs:
        if v in needed:
            add_input(v, v.name)
    taken = {v.name for v in graph.inputs + graph.params}
    for v in (r for n in graph.nodes for r in n.results):
        if v in cuts and v in needed:
            name = next(f"c{k}" for k in range(len(taken) + 1) if f"c{k}" not in taken)
            taken.add(name)
            add_input(v, name)
    for p in graph.params:
        if p in needed:
            new[p] = Value(p.type, name=p.name, param=p.param)
            out.params.append(new[p])
    for node in graph.nodes:
        if not any(r in needed and r not in cuts for r in node.results):
            continue
        copy = Node(node.op, [new[v] for v in node.operands], dict(node.attrs), placement=node.placement,
                    module=node.module)
        copy.results = [Value(r.type, producer=copy, index=r.index) for r in node.results]
        new.update(zip(node.results, copy.results))
        out.nodes.append(copy)
    out.outputs = [new[v] for v in outputs]
    return out, sources
