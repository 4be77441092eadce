"""freeze: compute, once, what frozen weights determine, instead of on every call.

With `ctx.frozen`, the weights are part of the program, so a value computed only from params and
constants (Linear's `transpose(weight)`, a `reshape(bias, [C, 1, 1])`, a dequantized weight) is
evaluated at compile time where a computation that depends on the inputs reads it. The value
becomes a new param named after the weight it came from and the last op
(`fc1.weight` -> `fc1.weight_transpose`), not a constant: a weight is data in the weights file,
never a literal in generated code. Only values of at most `ctx.settings.freeze_inline`
elements (default 1: scalars) become constants, which targets write inline; tiny params become
constants too. A value with more bytes than the stored weights it comes from (a broadcast of a
weight, an int8 weight dequantized to f32) is left to run, so freezing never grows the model.
Chains of constants alone are fold-constants' business. Params nothing reads any more are
dropped with their weights; the nodes that computed frozen values are left for `dce`.

Storing a transposed copy costs nothing when the original has no other reader (it is dropped);
a weight read both ways (an embedding tied to the LM head) is stored twice.
"""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, Value
from .manager import PassContext, WeightPass
from .rewrite import (
    Rewriter,
    add_weight,
    constant_value,
    derived_name,
    drop_unused_params,
    elements,
    evaluate,
    first_param,
    make_node,
    replace_uses,
    rewrite,
)


class _Static:
    """Which values the frozen weights determine, their values on demand, and their weight sizes."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray]):
        self.leaves: dict[Value, int] = {}  # a static value -> stored bytes of the params it reads
        self.arrays: dict[Value, np.ndarray] = {}
        self.weights = weights
        for p in graph.params:
            if p.name in weights:
                self.leaves[p] = np.asarray(weights[p.name]).nbytes
        for node in graph.nodes:
            if node.op == "constant":
                for r in node.results:
                    self.leaves[r] = 0
            elif node.operands and all(v in self.leaves for v in node.operands):
                size = sum(self.leaves[v] for v in node.operands)
                for r in node.results:
                    self.leaves[r] = size

    def value(self, v: Value) -> np.ndarray | None:
        if v not in self.arrays:
            if v.param is not None:
                self.arrays[v] = np.asarray(self.weights[v.name], dtype=v.dtype.numpy)
            elif v.producer.op == "constant":
                self.arrays[v] = constant_value(v)
            else:
                args = [self.value(u) for u in v.producer.operands]
                results = None if any(a is None for a in args) else evaluate(v.producer, args)
                for r, a in zip(v.producer.results, results or [None] * len(v.producer.results)):
                    self.arrays[r] = a
        return self.arrays[v]


class Freeze(WeightPass):
    name = "freeze"

    def rewrite(self, graph: Graph, ctx: PassContext, weights: dict[str, np.ndarray]) -> Graph:
        inline = ctx.settings.freeze_inline
        static = _Static(graph, weights)
        readers = {v for n in graph.nodes if n.results[:1] and n.results[0] not in static.leaves
                   for v in n.operands} | set(graph.outputs)

        def rule(rw: Rewriter, node: Node) -> list[Value] | None:
            if node.op == "constant" or not node.results or node.results[0] not in static.leaves:
                return None
            if not any(r in readers for r in node.results) or not static.leaves[node.results[0]]:
                return None  # read only by other static nodes, or made of constants alone
            arrays = [static.value(r) for r in node.results]
            nbytes = sum(a.size * r.dtype.itemsize for r, a in zip(node.results, arrays) if a is not None)
            if any(a is None for a in arrays) or nbytes > static.leaves[node.results[0]]:
                return None
            source = first_param(node.operands)
            return [rw.constant(a, r.dtype) if a.size <= inline else
                    add_weight(graph, ctx, derived_name(source, node.op), a, r.dtype, source=source)
                    for r, a in zip(node.results, arrays)]

        rewrite(graph, rule)
        read = {v for n in graph.nodes for v in n.operands} | set(graph.outputs)
        tiny = [p for p in graph.params if p in read and elements(p.type) <= inline and p.name in weights]
        if tiny:
            constants = [make_node("constant", [], {"value": np.asarray(weights[p.name], dtype=p.dtype.numpy),
                                                    "dtype": p.dtype}) for p in tiny]
            graph.nodes[:0] = constants  # constants read nothing, so they may open the schedule
            replace_uses(graph, {p: c.result for p, c in zip(tiny, constants)})
        drop_unused_params(graph, ctx)
        return graph
