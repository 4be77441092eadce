"""Indices checked before a target sees them: gather's, and every operand an op's definition
marks as indexing (`OpDef.indices`: cross_entropy's labels).

The IR defines `gather` for indices in [0, n) only; out of that range every framework does
something of its own (docs/known-differences.md): torch raises and wraps -1 to the last row, jax
returns NaN, TensorFlow clamps to the first or last row, MindSpore raises and then fails every
later call of the same shapes. So the runtime computes each gather's indices exactly, with the
reference interpreter on the part of the graph that produces them (an input, or an iota of
positions, usually), and refuses a call with one out of range, naming the gather's source line,
the table, the value and where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..ir.errors import ShipeiError
from ..ir.graph import Graph, Node, Value
from ..ir.interpreter import interpret
from ..ir.registry import get_op
from ..ir.subgraph import cone, extract
from ..ir.types import dim_symbols, eval_dim


@dataclass
class IndexCheck:
    """The indexing nodes of a graph, and the graph computing their indices from its inputs."""

    graph: Graph
    gathers: list[tuple[Node, int]]  # an indexing node and its operand of indices
    indices: Graph  # one output per pair: the indices
    sources: list[Value]  # the graph's inputs that `indices` reads, in its input order
    weights: dict[str, np.ndarray]  # the params it reads (rarely any)

    @staticmethod
    def build(graph: Graph, weights: Mapping[str, np.ndarray]) -> IndexCheck | None:
        """The check for `graph`, or None when it indexes nothing."""
        gathers = [(n, i) for n in graph.nodes for i in get_op(n.op).index_operands() if i < len(n.operands)]
        if not gathers:
            return None
        part, sources = extract(graph, [n.operands[i] for n, i in gathers])
        return IndexCheck(graph, gathers, part, sources, {p.name: weights[p.name] for p in part.params})

    def check(self, arrays: Sequence[np.ndarray], env: Mapping[str, int]) -> None:
        """Raise a `ShipeiError` at the first gather given an index outside [0, n); `arrays` are
        the graph's inputs as coerced, `env` the shape symbols they bind."""
        given = dict(zip(self.graph.inputs, arrays))
        values = interpret(self.indices, [given[v] for v in self.sources], self.weights, symbols=env)
        for (node, operand), idx in zip(self.gathers, values):
            opdef = get_op(node.op)
            n = eval_dim(node.operands[0].shape[opdef.indexed_axis(node.attrs, opdef.index_operands()[operand])], env)
            bad = (idx < 0) | (idx >= n)
            if bad.any():
                at = tuple(int(i) for i in np.argwhere(bad)[0])
                what = "gather from" if node.op == "gather" else f"{node.op}'s {opdef.operands[operand]} into"
                raise ShipeiError(
                    f"{what} {_describe(node.operands[0])}: index {idx[at]} is out of range [0, {n}) "
                    f"({_origin(self.graph, node.operands[operand], at, env)}; {int(bad.sum())} of {idx.size} "
                    "out of range)", node.loc,
                    hint=f"indices must lie in [0, n), as the IR defines {node.op}; check_indices=False "
                         "skips this check and leaves it to the target (see docs/known-differences.md)")


def _describe(table: Value) -> str:
    return f"'{table.name}' ({table.type})" if table.name else str(table.type)


def _origin(graph: Graph, indices: Value, at: tuple[int, ...], env: Mapping[str, int]) -> str:
    """Where an index came from: an input and the position in it, the inputs it was computed
    from, or the shape symbols (positions such as `arange(T)`) and the inputs that set them."""
    if indices in graph.inputs:
        return f"input '{indices.name}' at {list(at)}"
    part = cone([indices])
    inputs = [v.name for v in graph.inputs if v in part]
    if inputs:
        return f"computed from {_inputs(inputs)}"
    symbols = sorted({s for v in part for d in v.shape for s in dim_symbols(d)})
    if not symbols:
        return "a constant"
    setters = [v.name for v in graph.inputs if any(dim_symbols(d) & set(symbols) for d in v.shape)]
    return f"computed from {', '.join(f'{s} = {env[s]}' for s in symbols)}, the shape of {_inputs(setters)}"


def _inputs(names: list[str]) -> str:
    return ("input " if len(names) == 1 else "inputs ") + ", ".join(f"'{n}'" for n in names)
