"""The IR graph: SSA values produced by nodes, in a topologically ordered list.

A `Graph` owns its inputs (data arguments), its params (weights and buffers, each a graph input
marked as a param with its initializer, so weights are data, not code), its nodes in schedule
order and its outputs. Names of intermediate values are given only when printing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ShipeiError, SourceLoc
from .placement import Placement
from .registry import get_op
from .types import Dim, DType, TensorType, dim_symbols


@dataclass(frozen=True)
class Init:
    """How a param is initialized: an initializer name from `ir.init` and its arguments."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.args)
        return f"{self.name}({inner})"


@dataclass(frozen=True)
class ParamInfo:
    """Marks a graph input as a weight (`param`) or non-trained state (`buffer`); `loc` is where the
    user declared it, or declared the layer that holds it."""

    init: Init
    buffer: bool = False
    loc: SourceLoc | None = field(default=None, compare=False)


@dataclass(eq=False)
class Value:
    """An SSA value. `producer` is None for graph inputs and params. `hint` is the name the source
    gave a computed value (`h = relu(...)`): generated programs call it that, where they can."""

    type: TensorType
    name: str | None = None
    producer: Node | None = None
    index: int = 0
    param: ParamInfo | None = None
    hint: str | None = None

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.type.shape

    def __repr__(self) -> str:
        return f"Value({self.name or '?'}: {self.type})"


@dataclass(eq=False)
class Node:
    """One op application: operands, static attributes and one or more results. `placement` is a
    hint (from the source or a device map) until the partition pass makes it a full placement;
    `module` is the path of the layer whose forward built it (`h.0.attn`), which device maps name."""

    op: str
    operands: list[Value]
    attrs: dict[str, Any]
    results: list[Value] = field(default_factory=list)
    loc: SourceLoc | None = None
    placement: Placement | None = None
    group: int | None = None  # fusion group: consecutive nodes with one id become one region
    module: str = ""

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"{self.op} has {len(self.results)} results")
        return self.results[0]

    def __repr__(self) -> str:
        return f"Node({self.op}, {len(self.operands)} operands)"


@dataclass(eq=False)
class DerivedParams:
    """Params a program computes from the user's weights when they are bound (`codegen.prepare`):
    `graph` computes them (its outputs, in the order of `params`) from the user's params, and
    `stored` are the user's params in their order: what a weights file holds."""

    graph: Graph
    params: list[Value]
    stored: list[Value]


@dataclass(eq=False)
class Graph:
    """A model's computation; the unit that passes transform and targets emit."""

    name: str
    inputs: list[Value] = field(default_factory=list)
    params: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    loc: SourceLoc | None = field(default=None, repr=False)  # where the model is declared
    #: each layer instance's path (as `Node.module` names it) -> its definition's name: `h.0` -> `Block`
    layers: dict[str, str] = field(default_factory=dict, repr=False)
    #: inputs (by name) the caller gives up to the program: an eager target may write results over them
    donated: frozenset[str] = field(default=frozenset(), repr=False)
    #: where some params are computed from the user's weights at load (`codegen.prepare`)
    derived: DerivedParams | None = field(default=None, repr=False)

    def param(self, name: str) -> Value:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def symbols(self) -> list[str]:
        """The shape symbols the inputs declare, in order of first appearance."""
        return list(dict.fromkeys(s for v in self.inputs for d in v.shape for s in sorted(dim_symbols(d))))

    def last_reads(self) -> dict[Value, int]:
        """Each value's last reader's index in the schedule; outputs are read after the last node."""
        out = {v: i for i, node in enumerate(self.nodes) for v in node.operands}
        out.update({v: len(self.nodes) for v in self.outputs})
        return out

    def groups(self) -> set[int]:
        """The fused groups' ids (see the fuse pass); empty before fusion."""
        return {n.group for n in self.nodes if n.group is not None}

    def users(self) -> dict[Value, list[Node]]:
        """Map each value to the nodes that read it (computed, so it is never stale)."""
        out: dict[Value, list[Node]] = {}
        for node in self.nodes:
            for v in node.operands:
                out.setdefault(v, []).append(node)
        return out

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)


def disjoint_union(graphs: list[Graph], name: str) -> Graph:
    """One graph computing every graph's outputs from its own inputs and params, so many small
    graphs compile as one program. Inputs become `g{k}_{name}`; the graphs are consumed."""
    merged = Graph(name)
    for k, g in enumerate(graphs):
        for v in g.inputs + g.params:
            v.name = f"g{k}_{v.name}"
        merged.inputs += g.inputs
        merged.params += g.params
        merged.nodes += g.nodes
        merged.outputs += g.outputs
    return merged


class Builder:
    """Appends nodes to a graph, inferring result types from the op registry.

    `loc`, `placement` and `module` are applied to every node built while set, so the frontend sets
    them once per statement or layer call instead of threading them through every call.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.loc: SourceLoc | None = None
        self.placement: Placement | None = None
        self.module = ""
        self._param_names = {p.name for p in graph.params}

    def input(self, name: str, type: TensorType) -> Value:
        v = Value(type, name=name)
        self.graph.inputs.append(v)
        return v

    def add_param(self, name: str, type: TensorType, init: Init, buffer: bool = False) -> Value:
        if name in self._param_names:
            raise ShipeiError(f"parameter '{name}' is declared twice", self.loc)
        v = Value(type, name=name, param=ParamInfo(init, buffer, self.loc))
        self.graph.params.append(v)
        self._param_names.add(name)
        return v

    def op(self, op: str, *operands: Value, **attrs: Any) -> list[Value]:
        """Build a node; returns all its results."""
        opdef = get_op(op)
        attrs = opdef.complete_attrs(attrs, self.loc)
        try:
            types = opdef.infer(list(operands), attrs)
        except ShipeiError as e:
            raise ShipeiError(f"{op}: {e.message}", e.loc or self.loc, e.hint) from None
        node = Node(op, list(operands), attrs, loc=self.loc, placement=self.placement, module=self.module)
        node.results = [Value(t, producer=node, index=i) for i, t in enumerate(types)]
        self.graph.nodes.append(node)
        return node.results

    def __call__(self, op: str, *operands: Value, **attrs: Any) -> Value:
        """Build a single-result node and return its value."""
        (result,) = self.op(op, *operands, **attrs)
        return result
