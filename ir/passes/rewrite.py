"""What the passes share: a one-walk node rewriter, constant and weight access, and param edits.

`rewrite(graph, rule)` rebuilds the node list in one forward walk. `rule(rw, node)` returns None
to keep the node, or the values that replace its results; it may `rw.emit` new nodes, which land
where the node was, so the schedule stays topological. Passes rewrite graphs in place; `clone`
gives an independent copy when the original is still needed (tests, the facade).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShipeiError
from ..graph import Graph, Init, Node, ParamInfo, Value
from ..interpreter import resolve_attrs
from ..registry import AttrKind, get_op
from ..types import DType, Sym, TensorType, eval_dim

if TYPE_CHECKING:
    from .manager import PassContext

Rule = Callable[["Rewriter", Node], "list[Value] | None"]


def make_node(op: str, operands: Iterable[Value], attrs: Mapping[str, Any], like: Node | None = None) -> Node:
    """A node typed by the registry, with `like`'s source location, placement, fusion group and module."""
    opdef = get_op(op)
    operands = list(operands)
    attrs = opdef.complete_attrs(dict(attrs))
    node = Node(op, operands, attrs, loc=like.loc if like else None, placement=like.placement if like else None,
                group=like.group if like else None, module=like.module if like else "")
    node.results = [Value(t, producer=node, index=i) for i, t in enumerate(opdef.infer(operands, attrs))]
    return node


class Rewriter:
    """State of one `rewrite` walk: the new node list and what each replaced value became."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[Node] = []
        self.subst: dict[Value, Value] = {}
        self.current: Node | None = None
        self.changed = False

    def get(self, value: Value) -> Value:
        while value in self.subst:
            value = self.subst[value]
        return value

    def emit_op(self, op: str, *operands: Value, **attrs: Any) -> list[Value]:
        """A new node before the current one (with its loc, device and group); all its results."""
        node = make_node(op, operands, attrs, like=self.current)
        self.nodes.append(node)
        self.changed = True
        return node.results

    def emit(self, op: str, *operands: Value, **attrs: Any) -> Value:
        (result,) = self.emit_op(op, *operands, **attrs)
        return result

    def constant(self, value: np.ndarray, dtype: DType) -> Value:
        return self.emit("constant", value=np.asarray(value, dtype=dtype.numpy), dtype=dtype)


def infers_same(node: Node, operands: list[Value]) -> bool:
    """Whether the node's op on `operands` gives exactly the node's result types."""
    try:
        return get_op(node.op).infer(operands, node.attrs) == [r.type for r in node.results]
    except ShipeiError:
        return False


def rewrite(graph: Graph, rule: Rule) -> bool:
    """Apply `rule` to every node in schedule order; True when anything changed."""
    rw = Rewriter(graph)
    for node in graph.nodes:
        node.operands = [rw.get(v) for v in node.operands]
        rw.current = node
        replacement = rule(rw, node)
        if replacement is None:
            rw.nodes.append(node)
            continue
        for old, new in zip(node.results, replacement, strict=True):
            if old.type != new.type:
                raise AssertionError(f"{node.op}: a rewrite replaced {old.type} by {new.type}")
            rw.subst[old] = new
            if new.hint is None and new.producer is not None:
                new.hint = old.hint  # the source's name for what the new value computes
        rw.changed = True
    graph.nodes = rw.nodes
    graph.outputs = [rw.get(v) for v in graph.outputs]
    return rw.changed


def replace_uses(graph: Graph, subst: Mapping[Value, Value]) -> None:
    """Read `subst[v]` wherever `v` is read (operands and outputs)."""
    for node in graph.nodes:
        node.operands = [subst.get(v, v) for v in node.operands]
    graph.outputs = [subst.get(v, v) for v in graph.outputs]


def clone(graph: Graph) -> Graph:
    """An independent copy: new values and nodes, the same names, types, attributes and groups."""
    values: dict[Value, Value] = {}
    out = Graph(graph.name, loc=graph.loc, layers=dict(graph.layers), donated=graph.donated)
    for v in graph.inputs:
        values[v] = Value(v.type, v.name)
        out.inputs.append(values[v])
    for v in graph.params:
        values[v] = Value(v.type, v.name, param=v.param)
        out.params.append(values[v])
    for node in graph.nodes:
        copy = Node(node.op, [values[v] for v in node.operands], dict(node.attrs), loc=node.loc,
                    placement=node.placement, group=node.group, module=node.module)
        copy.results = [Value(r.type, producer=copy, index=i, hint=r.hint) for i, r in enumerate(node.results)]
        values.update(zip(node.results, copy.results))
        out.nodes.append(copy)
    out.outputs = [values[v] for v in graph.outputs]
    return out


# ---- constants ----

def constant_value(value: Value) -> np.ndarray | None:
    """The array a `constant` node holds, at its dtype; None for anything else."""
    node = value.producer
    if node is None or node.op != "constant":
        return None
    return np.asarray(node.attrs["value"], dtype=node.attrs["dtype"].numpy)


def splat(value: Value) -> Any | None:
    """The one element of a non-empty constant whose elements are all equal (as a numpy scalar)."""
    array = constant_value(value)
    if array is None or array.size == 0:
        return None
    first = array.flat[0]
    same = array == first if not np.isnan(first) else np.isnan(array)
    return first if np.all(same) else None


def is_splat_of(value: Value, number: float) -> bool:
    s = splat(value)
    return s is not None and not np.isnan(s) and s == number


def compute_dtype(dtype: DType) -> np.dtype:
    """What the interpreter computes a dtype in at declared precision (f16/bf16 in f32)."""
    return np.dtype(np.float32) if dtype in (DType.f16, DType.bf16) else dtype.numpy


def evaluate(node: Node, arrays: list[np.ndarray]) -> list[np.ndarray] | None:
    """The node's results at their dtypes, as the interpreter computes them (declared precision);
    None when the node cannot be evaluated at compile time (a symbolic shape, an error)."""
    if not all(r.type.is_static for r in node.results) or _symbolic(node):
        return None
    args = [np.asarray(a, dtype=v.dtype.numpy).astype(compute_dtype(v.dtype)) for v, a in zip(node.operands, arrays)]
    try:
        with np.errstate(all="ignore"):
            out = get_op(node.op).reference(*args, **resolve_attrs(node.op, node.attrs, {}))
    except (ShipeiError, ValueError, TypeError, IndexError):
        return None
    outs = out if isinstance(out, tuple) else (out,)
    return [np.asarray(a).astype(r.dtype.numpy) for r, a in zip(node.results, outs)]


def _symbolic(node: Node) -> bool:
    specs = get_op(node.op).attrs
    for name, value in node.attrs.items():
        kind = specs[name].kind
        if (kind is AttrKind.DIM and isinstance(value, Sym)) or (
                kind is AttrKind.DIMS and any(isinstance(d, Sym) for d in value)):
            return True
    return False


def elements(t: TensorType, dims: Mapping[str, int] | None = None) -> int:
    """How many elements a value of type `t` holds, its symbols bound by `dims` (exact: Python's
    ints, where numpy's int64 would overflow at a dimension past 2**63)."""
    env = dict(dims or {})
    return math.prod(int(eval_dim(d, env)) for d in t.shape)


# ---- weights of frozen graphs ----

def frozen_weights(ctx: PassContext) -> dict[str, np.ndarray] | None:
    """The weights a pass may read and rewrite: only when the user froze them."""
    return ctx.weights if ctx.frozen and ctx.weights is not None else None


def static_value(value: Value, weights: Mapping[str, np.ndarray] | None) -> np.ndarray | None:
    """A value known at compile time: a constant, a frozen param, or an injective op of those."""
    array = constant_value(value)
    if array is not None:
        return array
    if value.param is not None:
        return None if weights is None or value.name not in weights else np.asarray(
            weights[value.name], dtype=value.dtype.numpy)
    node = value.producer
    if node is None or node.op not in ("reshape", "transpose", "cast"):
        return None
    inner = static_value(node.operands[0], weights)
    if inner is None:
        return None
    out = evaluate(node, [inner])
    return None if out is None else out[0]


def fresh_name(graph: Graph, base: str) -> str:
    """`base`, or `base_2`, `base_3`, ... whichever no input or param has."""
    taken = {v.name for v in graph.inputs + graph.params}
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


#: Initializer recorded for params whose values a pass computed; the values live in the weights.
COMPUTED = Init("zeros")


def add_weight(graph: Graph, ctx: PassContext, base: str, array: np.ndarray, dtype: DType | None = None,
               buffer: bool = False, storage: np.dtype | None = None, source: Value | None = None) -> Value:
    """A new param holding `array` (stored as `storage`, default the param's dtype) in ctx.weights,
    computed from the param `source` (see `derived_param`)."""
    dtype = dtype or DType.of_numpy(array.dtype)
    name = fresh_name(graph, base)
    value = Value(TensorType(dtype, tuple(array.shape)), name, param=derived_param(source, buffer))
    graph.params.append(value)
    ctx.weights[name] = np.ascontiguousarray(array.astype(storage or dtype.numpy))
    return value


def derived_param(source: Value | None, buffer: bool = False) -> ParamInfo:
    """What a param computed from the param `source` is: declared where `source` was, so that an
    error about it (a name a target refuses) points at the user's declaration."""
    return ParamInfo(COMPUTED, buffer=buffer, loc=source.param.loc if source is not None and source.param else None)


def drop_unused_params(graph: Graph, ctx: PassContext) -> list[str]:
    """Remove params nothing reads (frozen graphs only) and their weights; returns their names."""
    if frozen_weights(ctx) is None:
        return []
    read = {v for node in graph.nodes for v in node.operands} | set(graph.outputs)
    dropped = [p.name for p in graph.params if p not in read]
    graph.params = [p for p in graph.params if p in read]
    for name in dropped:
        ctx.weights.pop(name, None)
    return dropped


def derived_name(param: Value | None, suffix: str) -> str:
    """`fc1.weight` -> `fc1.weight_<suffix>`: a new param beside the one it came from."""
    return f"{param.name if param is not None else 'frozen'}_{suffix}"


def first_param(values: Iterable[Value]) -> Value | None:
    """The param a value chain starts from, looking through injective ops (for naming)."""
    for v in values:
        while v.param is None and v.producer is not None and v.producer.operands:
            v = v.producer.operands[0]
        if v.param is not None:
            return v
    return None


def layer_weights(graph: Graph, tables: bool = False) -> dict[Value, int]:
    """Float params read as a layer's weight, each with its output-channel axis: the weight of a
    matmul (whose output channels are its last axis), linear or conv2d (axis 0), directly or
    through transposes; with `tables`, also gathered tables (one channel per row)."""
    out: dict[Value, int] = {}
    for node in graph.nodes:
        if node.op in ("matmul", "linear", "conv2d"):
            v = node.operands[1]
            axis = v.type.rank - 1 if node.op == "matmul" else 0
        elif node.op == "gather" and tables:
            v, axis = node.operands[0], node.attrs["axis"] % node.operands[0].type.rank
        else:
            continue
        while v.producer is not None and v.producer.op == "transpose":
            axis = v.producer.attrs["perm"][axis]
            v = v.producer.operands[0]
        if v.param is not None and v.dtype.is_float and v.type.rank >= 2:
            out.setdefault(v, axis)
    return out
