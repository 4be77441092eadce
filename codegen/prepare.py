"""What a program computes from its weights alone, computed once, when `load` binds them.

ONNX Runtime folds what a model's initializers determine when it creates a session, on the
weights it was given. A shipei program does the same when `load` binds weights (and again on
every rebinding, which loads): a value computed from params and scalar constants alone (a batch
norm folded into the convolution before it by `fold-batch-norm`, a weight's transpose) becomes a
param of the model that `prepare_weights` computes from the weights as the user names them, in
numpy, at float64 for float weights (as `freeze` computes frozen weights at compile time), cast to
its declared dtype. The module's `PARAMS` stay the user's, so a state_dict still loads by name.

Only float32 and float64 computations of the ops numpy spells here are prepared, only values that
take no more memory than the weights they come from (as `freeze` decides: a broadcast of a weight
stays in the model), and never an output (the program returns tensors it computed). Training
compiles without it: gradients are by the user's params.
"""

from __future__ import annotations

import textwrap

from ..ir.graph import DerivedParams, Graph, Node, Value
from ..ir.passes.rewrite import clone, derived_name, derived_param, elements, first_param, fresh_name, replace_uses
from ..ir.types import DType
from .writer import Code, Emit, Namespace, Target, inline_scalars

#: numpy spellings of the ops a prepared computation may use.
RULES: dict[str, str] = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "neg": "-{0}",
    "sqrt": "np.sqrt({0})", "rsqrt": "1 / np.sqrt({0})",
    "reshape": "np.reshape({0}, {shape})", "transpose": "np.transpose({0}, {perm})",
}

_FLOATS = frozenset({DType.f32, DType.f64})
NUMPY = Target(name="numpy", framework="numpy", extra="", dtypes={d: f"np.{d.numpy.name}" for d in _FLOATS},
               rules=dict(RULES))


def prepare(graph: Graph) -> Graph:
    """`graph`, or a copy whose params include those it computes from its weights alone, derived
    at load (`Graph.derived` says how)."""
    found = set(_hoisted(graph))
    if not found:
        return graph  # the common case, without a copy
    g = clone(graph)  # the same schedule: its nodes at the positions of those found
    hoisted = [copy for node, copy in zip(graph.nodes, g.nodes, strict=True) if node in found]
    stored = list(g.params)
    chosen = set(hoisted)
    inside = {r for n in hoisted for r in n.results}
    frontier = list(dict.fromkeys(v for n in g.nodes if n not in chosen for v in n.operands if v in inside))
    derived = []
    for v in frontier:
        source = first_param(v.producer.operands)
        layer = source.name.rsplit(".", 1)[0] + "." if source is not None and "." in source.name else ""
        name = fresh_name(g, f"{layer}{v.hint}" if v.hint else derived_name(source, v.producer.op))
        derived.append(Value(v.type, name, param=derived_param(source, buffer=True)))
        g.params.append(derived[-1])
    read = {v for n in hoisted for v in n.operands}
    for node in hoisted:
        node.group = None  # fused with its neighbours at -O3, maybe; computed alone at load
    weights = Graph(f"{g.name}Weights", params=[p for p in stored if p in read], nodes=hoisted, outputs=frontier)
    g.nodes = [n for n in g.nodes if n not in chosen]
    replace_uses(g, dict(zip(frontier, derived)))
    used = {v for n in g.nodes for v in n.operands} | set(g.outputs)
    g.nodes = [n for n in g.nodes if n.op != "constant" or n.result in used]  # scalars only the weights read
    g.params = [p for p in g.params if p in used]
    g.derived = DerivedParams(weights, derived, stored)
    return g


def _hoisted(g: Graph) -> list[Node]:
    """The nodes to prepare, in schedule order: numpy-spelled float computations of params and
    inline scalars, each result no larger than the stored weights it comes from, no output."""
    outputs = set(g.outputs)
    size = {p: _bytes(p) for p in g.params if p.type.is_static}
    size.update({n.result: 0 for n in inline_scalars(g)})
    hoisted: list[Node] = []
    for node in g.nodes:
        if (node.op not in RULES or not all(v.dtype in _FLOATS for v in (*node.operands, *node.results))
                or not all(v in size for v in node.operands) or any(r in outputs for r in node.results)):
            continue
        stored = sum(size[v] for v in node.operands)
        if any(not r.type.is_static or _bytes(r) > max(stored, 1) for r in node.results):
            continue
        size.update(dict.fromkeys(node.results, stored))
        hoisted.append(node)
    return hoisted


def _bytes(v: Value) -> int:
    return v.dtype.itemsize * elements(v.type)


def write_prepare(code: Code, derived: DerivedParams, kept: list[Value], names: Namespace) -> None:
    """`prepare_weights(weights)`: the user's weights (name -> numpy array, checked) in, the
    model's out: those it reads as they are (`kept`), and the derived ones computed."""
    e = Emit(NUMPY, derived.graph, names, lambda v: e.values[v], _no_constant)
    for node in {v.producer for n in derived.graph.nodes for v in n.operands if v.producer is not None}:
        if node.op == "constant":  # an inline scalar (`_hoisted` takes no other)
            e.values[node.result] = e.float(node.result.dtype, float(node.attrs["value"]))
    code("", "")
    with code.block("def prepare_weights(weights):"):
        code('"""What the model computes from its weights alone (see the module docstring of shipei\'s',
             'codegen/prepare.py), computed once from the weights as PARAMS names them."""')
        for p in derived.graph.params:
            e.values[p] = names.fresh(p.name.rsplit(".", 1)[-1])
            code(f"{e.values[p]} = np.asarray(weights[{p.name!r}], np.float64)")
        with code.block('with np.errstate(all="ignore"):  # NaN and inf as the model would compute them'):
            e.body(code)
        consumed = {p.name for p in derived.stored} - {p.name for p in kept}
        if consumed:
            code("consumed = {  # read here alone: the model holds what they determine")
            for line in textwrap.wrap(", ".join(repr(name) for name in sorted(consumed)) + ",", 96,
                                      break_long_words=False, break_on_hyphens=False):
                code(f"    {line}")
            code("}", "prepared = {name: array for name, array in weights.items() if name not in consumed}")
        else:
            code("prepared = dict(weights)")
        for value, param in zip(derived.graph.outputs, derived.params, strict=True):
            # np.asarray(order="C"), not np.ascontiguousarray, which makes a 0-d array 1-d
            code(f"prepared[{param.name!r}] = np.asarray({e.values[value]}, np.{param.dtype.numpy.name}, order='C')")
        code("return prepared")


def _no_constant(node: Node) -> str:
    raise AssertionError(f"a prepared computation reads only inline scalars, not {node}")
