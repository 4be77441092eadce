"""The verifier: the definition of valid IR. Tests run it after every pass.

A graph is valid when
- the graph, its inputs and params are named by identifiers
  (`[A-Za-z_][A-Za-z0-9_.]*`), and no two inputs or params share a name;
- inputs are plain values; params and buffers carry a `ParamInfo`, have static shapes, and use a
  known initializer whose arguments are int, float or bool literals;
- every node's op is registered, its operands are defined before it (inputs, params or an
  earlier node's results), its attributes are complete and in the canonical form `coerce_attr`
  gives (tuples, not lists; arrays of a shipei dtype), its results point back at it
  (`producer`, `index`) and have the types the op's rule infers; each value is defined once;
- fusion groups (`Node.group`) are None or non-negative ints, and the nodes of one group are
  consecutive: a group is one region;
- every output is defined.

Valid IR prints, and `parse_ir` reads the text back as an equal graph; it accepts only valid IR.
"""

from __future__ import annotations

import re

from .errors import ShipeiError
from .graph import Graph, Node, Value
from .init import check_init
from .placement import Placement
from .printer import print_node, value_names
from .registry import AttrKind, get_op
from .types import DType

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def verify(graph: Graph) -> None:
    """Raise a `ShipeiError` naming the first violation (and the node, with its loc); else None."""
    if not IDENTIFIER.fullmatch(graph.name):
        raise ShipeiError(f"graph name {graph.name!r} is not an identifier")
    defined: set[Value] = set()
    names: set[str] = set()
    for value in graph.inputs:
        if value.param is not None:
            raise ShipeiError(f"input %{value.name} is marked as a param; params belong in graph.params")
        _check_arg(value, "input", defined, names)
    for value in graph.params:
        _check_param(value)
        _check_arg(value, "param", defined, names)
    producers = {r: i for i, node in enumerate(graph.nodes) for r in node.results}
    closed: set[int] = set()
    for i, node in enumerate(graph.nodes):
        problem = _node_problem(node, defined, producers) or _group_problem(graph, i, closed)
        if problem:
            raise ShipeiError(f"node {i} ({node.op}): {problem}\n    {_printed(graph, node)}", node.loc)
        defined.update(node.results)
    for i, value in enumerate(graph.outputs):
        if value not in defined:
            raise ShipeiError(f"output {i} of graph {graph.name} is not defined in it ({value!r})")


def _check_arg(value: Value, kind: str, defined: set[Value], names: set[str]) -> None:
    if value.name is None or not IDENTIFIER.fullmatch(value.name):
        raise ShipeiError(f"{kind} name {value.name!r} is not an identifier",
                          hint="names start with a letter or '_' and hold letters, digits, '_' and '.'")
    if value.producer is not None:
        raise ShipeiError(f"{kind} %{value.name} has a producer node")
    if value.name in names:
        raise ShipeiError(f"%{value.name} is defined twice among the graph's inputs and params")
    defined.add(value)
    names.add(value.name)


def _check_param(value: Value) -> None:
    if value.param is None:
        raise ShipeiError(f"param %{value.name} has no ParamInfo (initializer)")
    if not value.type.is_static:
        raise ShipeiError(f"param %{value.name} has a symbolic shape {value.type}")
    try:
        check_init(value.param.init)
    except ShipeiError as err:
        raise ShipeiError(f"param %{value.name}: {err.message}", hint=err.hint) from None
    for key, arg in value.param.init.args:
        if not isinstance(arg, (bool, int, float)):
            raise ShipeiError(f"param %{value.name}: initializer argument {key}={arg!r} is not an int, float or bool")


def _node_problem(node: Node, defined: set[Value], producers: dict[Value, int]) -> str | None:
    """What is wrong with `node`, given the values defined before it; None if nothing."""
    try:
        opdef = get_op(node.op)
    except ShipeiError as err:
        return err.message
    for k, value in enumerate(node.operands):
        if value not in defined:
            where = f"only later, by node {producers[value]}" if value in producers else "outside this graph"
            return f"operand {k} is used before it is defined (it is defined {where})"
    try:
        attrs = opdef.complete_attrs(node.attrs)
    except ShipeiError as err:
        return err.message
    for name, canonical in attrs.items():
        if name not in node.attrs:
            return f"attribute '{name}' is missing"
        given = node.attrs[name]
        if given is not canonical and (type(given) is not type(canonical) or given != canonical):
            return f"attribute '{name}' is {given!r}, not in its canonical form {canonical!r}"
        if opdef.attrs[name].kind is AttrKind.ARRAY:
            try:
                DType.of_numpy(canonical.dtype)
            except ShipeiError as err:
                return f"attribute '{name}': {err.message}"
    try:
        types = opdef.infer(node.operands, attrs)
    except ShipeiError as err:
        return f"its type rule fails: {err.message}"
    if len(types) != len(node.results):
        return f"it has {len(node.results)} results, but the op gives {len(types)}"
    for j, (result, inferred) in enumerate(zip(node.results, types, strict=True)):
        if result.producer is not node or result.index != j:
            return f"result {j} does not point back at this node (producer, index)"
        if result in defined:
            return f"result {j} is already defined before this node"
        if result.type != inferred:
            return f"result {j} has type {result.type}, but the op gives {inferred}"
    if node.placement is not None and not isinstance(node.placement, Placement):
        return f"placement {node.placement!r} is not a Placement"
    return None


def _group_problem(graph: Graph, i: int, closed: set[int]) -> str | None:
    """Groups are one run each; `closed` holds the ids of runs that ended before node i."""
    group = graph.nodes[i].group
    before = graph.nodes[i - 1].group if i else None
    if before is not None and before != group:
        closed.add(before)
    if group is None:
        return None
    if isinstance(group, bool) or not isinstance(group, int) or group < 0:
        return f"group {group!r} is not a non-negative int"
    if group in closed:
        return f"group {group} is not one run of consecutive nodes (it appears again here)"
    return None


def _printed(graph: Graph, node: Node, limit: int = 240) -> str:
    """The node as the printer writes it, shortened for a message."""
    try:
        text = print_node(node, value_names(graph))
    except ShipeiError:
        text = f"{node.op}(...)"
    return text if len(text) <= limit else text[:limit] + " ..."
