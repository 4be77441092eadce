"""The canonical text of a graph, MLIR-flavoured; `ir.parser.parse_ir` reads it back exactly.

    graph @MLP(%x: f32[B, 784], %fc1.weight: param f32[256, 784] = kaiming_uniform(fan_in=784)) -> (f32[B, 256]) {
      %0 = transpose(%fc1.weight) {perm = [1, 0]} : f32[784, 256]
      %1 = matmul(%x, %0) : f32[B, 256] on torch:cuda loc("mlp.sp":7:13)
      return %1
    }

Inputs and params keep their names; node results are numbered in order of definition. Every
attribute is printed, defaults included, in the op's declared order, so the text says exactly
what the graph holds. Literals print so that they parse back to the same value:

- floats as `repr` (`0.5`, `1e-05`, `-0.0`, `inf`, `-inf`, `nan`), ints as digits, bools as
  `true`/`false`, strings as JSON, dtypes bare, `none` for an absent list, dims as `Sym` prints
  them (`B*T + 1`);
- arrays as `array<...>` around nested lists of those scalars (`array<[[1.0, 2.5], [-inf, nan]]>`,
  a scalar as `array<1.5>`). An array with no elements is `array<[]>` when its shape is [0] and
  otherwise says its shape, which nested lists cannot: `array<[] : [2, 0, 3]>`. Values print at
  float64 precision, which holds f16, bf16 and f32 values exactly.

A fused region (consecutive nodes with one `Node.group` id, as the `fuse` pass leaves them) prints
as a block around its nodes; each target emits it as one function:

      group 0 {
        %1 = matmul(%x, %0) : f32[B, 256]
        %2 = add(%1, %fc1.bias) : f32[B, 256]
      }

Printing does not need a valid graph (an undefined operand prints as `%?`), so `--print-after`
and the verifier's messages can show a broken one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ShipeiError
from .registry import all_ops, get_op
from .types import DType, Sym, dim_mul, dim_product, format_dim

if TYPE_CHECKING:
    from .graph import Graph, Init, Node, Value


def print_graph(graph: Graph, *, locs: bool = False, notes: Mapping[Node, str] | None = None) -> str:
    """The graph's text, ending in a newline; `locs` adds each node's source location, `notes` a
    comment on the nodes it names (why the partitioner placed each where it did)."""
    names = value_names(graph)
    args = [f"{names[v]}: {v.type}" for v in graph.inputs]
    for p in graph.params:
        kind = "buffer" if p.param and p.param.buffer else "param"
        init = f" = {_init(p.param.init)}" if p.param else ""
        args.append(f"{names[p]}: {kind} {p.type}{init}")
    outputs = ", ".join(str(v.type) for v in graph.outputs)
    lines = [f"graph @{graph.name}({', '.join(args)}) -> ({outputs}) {{"]
    group = None
    for node in graph.nodes:
        if node.group != group and group is not None:
            lines.append("  }")
        if node.group != group and node.group is not None:
            lines.append(f"  group {node.group} {{")
        group = node.group
        note = notes.get(node) if notes else None
        lines.append(("    " if group is not None else "  ") + print_node(node, names, locs=locs, note=note))
    if group is not None:
        lines.append("  }")
    returned = ", ".join(names.get(v, "%?") for v in graph.outputs)
    lines.append(f"  return {returned}" if returned else "  return")
    return "\n".join(lines) + "\n}\n"


def value_names(graph: Graph) -> dict[Value, str]:
    """`%name` for inputs and params, `%0, %1, ...` for node results in order of definition."""
    names = {v: f"%{v.name}" for v in graph.inputs + graph.params}
    results = [r for node in graph.nodes for r in node.results]
    names.update((r, f"%{i}") for i, r in enumerate(results))
    return names


def print_node(node: Node, names: dict[Value, str], *, locs: bool = False, note: str | None = None) -> str:
    """One node's line (without indentation), naming values by `names`; `note` ends it as a comment."""
    results = ", ".join(names.get(r, "%?") for r in node.results) or "()"
    text = f"{results} = {node.op}({', '.join(names.get(v, '%?') for v in node.operands)})"
    if node.attrs:
        text += " " + format_attrs(node)
    text += " : " + (", ".join(str(r.type) for r in node.results) or "()")
    if node.placement:
        text += f" on {node.placement}"
    if locs and node.loc:
        text += f" loc({json.dumps(node.loc.file)}:{node.loc.line}:{node.loc.col})"
    comments = [note] if note else []
    if node.op in _TRANSFERS:  # what crosses: a comment, which the parser skips
        (value,) = node.results
        comments.append(f"{format_dim(dim_mul(dim_product(value.shape), value.dtype.itemsize))} bytes")
    return text + (f"  // {'; '.join(comments)}" if comments else "")


#: Ops that move a value between placements, whose bytes a reader wants to see.
_TRANSFERS = frozenset(name for name, opdef in all_ops().items() if "transfer" in opdef.traits)


def _init(init: Init) -> str:
    return f"{init.name}({', '.join(f'{k}={_literal(v)}' for k, v in init.args)})"


def _literal(value: Any) -> str:
    """An attribute or initializer value as text; the Python type picks the form."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (DType, Sym)):
        return str(value)
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        return _format_array(value)
    raise ShipeiError(f"cannot print attribute value {value!r} of type {type(value).__name__}")


def _format_array(a: np.ndarray) -> str:
    if a.size == 0:
        return "array<[]>" if a.shape == (0,) else f"array<[] : {list(a.shape)}>"
    if DType.of_numpy(a.dtype).is_float:  # float64 holds every f16, bf16 and f32 value exactly
        a = a.astype(np.float64)
    return f"array<{_literal(a.tolist())}>"


def format_attrs(node: Node) -> str:
    """A node's attributes as the IR text writes them: `{axis = -1, eps = 1e-05}`."""
    return "{" + ", ".join(f"{k} = {_literal(v)}" for k, v in _ordered_attrs(node)) + "}"


def _ordered_attrs(node: Node) -> list[tuple[str, Any]]:
    """The op's declared order; attributes it does not declare (invalid IR) come last."""
    try:
        order = {name: i for i, name in enumerate(get_op(node.op).attrs)}
    except ShipeiError:
        order = {}
    return sorted(node.attrs.items(), key=lambda kv: order.get(kv[0], len(order)))
