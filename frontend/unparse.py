"""IR graph → DSL source: the program a user can paste, which elaborates back to the same graph.

Every node becomes one statement whose expression builds exactly that node (`v3 = v1 + x0`,
`v4 = sum(v3, axis=[1], keepdim=true)`, `v5 = v4[0:2, 1:3:2]`), so printing then elaborating
gives a graph equal node for node: the round trip the property tests check. Params keep their
names: a dotted param such as `fc1.weight` is declared in a small generated layer (`fc1 =
_fc1()`), the way the prelude's layers name theirs.

A slice the DSL's indexing cannot spell exactly (a negative start, a stop past the end) is
printed as the equivalent normalized indexing, so that program computes the same values through
a slightly different node.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..ir.errors import ShipeiError
from ..ir.graph import Graph, Node, Value
from ..ir.names import Namespace
from ..ir.registry import AttrKind, get_op
from ..ir.types import Dim, DType, Sym, TensorType
from .builtins import builtins
from .elaborate import CONSTANTS
from .parse import escape_name, is_python_name, keywords
from .source import prelude

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")



def unparse(graph: Graph) -> str:
    """DSL source for `graph`: one model, its params, and one statement per node."""
    return _Unparser(graph).text()


def format_dim(d: Dim) -> str:
    """A dim as a DSL expression: `B`, `3*B + 1`, `4 - B` (a leading minus is written `0 - B`)."""
    if isinstance(d, int):
        return str(d)
    terms = sorted(d.terms, key=lambda t: (t[1] < 0, not t[0]))
    out = ""
    for mono, coeff in terms:
        body = "*".join(mono) if mono else str(abs(coeff))
        if mono and abs(coeff) != 1:
            body = f"{abs(coeff)}*{body}"
        if not out:
            out = body if coeff > 0 else f"0 - {body}"
        else:
            out += f" {'+' if coeff > 0 else '-'} {body}"
    return out


def format_type(t: TensorType) -> str:
    return f"{t.dtype}[{', '.join(format_dim(d) for d in t.shape)}]"


def literal(value: Any) -> str:
    """A compile-time value as DSL text: numbers, bools, strings, dtypes, dims and lists of them."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if not value.isprintable():
            raise ShipeiError(f"string {value!r} has no DSL literal")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, DType):
        return value.value
    if isinstance(value, Sym):
        return format_dim(value)
    if isinstance(value, np.ndarray):
        array = value if value.dtype.kind in "biu" else value.astype(np.float64)
        return literal(array.tolist())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise ShipeiError(f"{type(value).__name__} value {value!r} has no DSL literal")


def _reserved() -> set[str]:
    layers = {d.name for d in prelude().items if hasattr(d, "cparams")}
    return set(keywords()) | set(builtins()) | set(CONSTANTS) | layers


class _Unparser:
    def __init__(self, graph: Graph):
        if not graph.outputs:
            raise ShipeiError(f"graph {graph.name} has no outputs; a DSL model returns at least one tensor")
        self.graph = graph
        symbols = set(graph.symbols())
        clash = symbols & _reserved()
        if clash:
            raise ShipeiError(f"shape symbol '{sorted(clash)[0]}' is a DSL name and cannot be declared")
        self.names = Namespace(_reserved() | symbols)
        self.values: dict[Value, str] = {}
        self.count = 0
        self.layers: list[str] = []
        self.items: list[str] = []

    def text(self) -> str:
        self.declare_params()
        args = []
        for v in self.graph.inputs:
            self.values[v] = self.names.fresh(v.name or "x")
            args.append(f"{self.values[v]}: {format_type(v.type)}")
        body = [self.statement(node) for node in self.graph.nodes]
        returned = ", ".join(self.ref(v) for v in self.graph.outputs)
        outs = ", ".join(format_type(v.type) for v in self.graph.outputs)
        name = escape_name(self.graph.name) if _NAME.match(self.graph.name) else "Model"
        lines = [*self.layers, f"model {name}() {{", *("    " + item for item in self.items)]
        if self.items:
            lines.append("")
        lines.append(f"    forward({', '.join(args)}) -> ({outs}) {{")
        lines += ["        " + line for line in body]
        lines += [f"        return {returned}", "    }", "}"]
        return "\n".join(lines) + "\n"

    # -- params ---------------------------------------------------------------------------
    def declare_params(self) -> None:
        """Top-level params as `param` items; dotted ones inside generated layers, in order."""
        tree: dict[str, Any] = {}
        for p in self.graph.params:
            parts = p.name.split(".")
            node = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = p
        for line in self.layer_items(tree, ""):
            self.items.append(line)
        for p in self.graph.params:
            head, *rest = p.name.split(".")
            self.values[p] = escape_name(head) + "".join(f"[{r}]" if r.isdigit() else f".{escape_name(r)}"
                                                         for r in rest)

    def layer_items(self, tree: dict[str, Any], path: str) -> list[str]:
        items = []
        for key, sub in tree.items():
            if not (_NAME.match(key) or key.isdigit()) or is_python_name(key):
                raise ShipeiError(f"param name '{path}{key}' cannot be written in the DSL")
            word = escape_name(key)
            if isinstance(sub, Value):
                if key.isdigit():
                    raise ShipeiError(f"param '{path}{key}' is numbered directly under its parent")
                kind = "buffer" if sub.param and sub.param.buffer else "param"
                init = sub.param.init if sub.param else None
                args = ", ".join(f"{k}={literal(v)}" for k, v in init.args) if init else ""
                items.append(f"{kind} {word}: {format_type(sub.type)} = {init.name if init else 'zeros'}({args})")
            elif all(k.isdigit() for k in sub):  # `blocks.0.w`: a layer list, `blocks[0] = _blocks_0()`
                for index, entry in sub.items():
                    if isinstance(entry, Value):
                        raise ShipeiError(f"param '{path}{key}.{index}' is numbered directly under its parent")
                    items.append(f"{word}[{index}] = {self.layer(entry, f'{path}{key}.{index}')}()")
            else:
                items.append(f"{word} = {self.layer(sub, path + key)}()")
            if not path:
                self.names.reserve(key)
        return items

    def layer(self, tree: dict[str, Any], path: str) -> str:
        """A generated layer holding the params under `path`; its forward is never called."""
        name = self.names.fresh("_" + path.replace(".", "_"))
        inner = self.layer_items(tree, path + ".")
        self.layers += [f"layer {name}() {{", *("    " + i for i in inner),
                        "    forward(x: f32[1]) -> f32[1] { return x }", "}", ""]
        return name

    # -- statements -----------------------------------------------------------------------
    def ref(self, v: Value) -> str:
        try:
            return self.values[v]
        except KeyError:
            raise ShipeiError(f"value {v!r} is used before it is defined") from None

    def statement(self, node: Node) -> str:
        expr = self.expr(node)
        names = [self.names.fresh(f"v{self.count + i}") for i in range(len(node.results))]
        self.count += len(names)
        for v, n in zip(node.results, names):
            self.values[v] = n
        if node.op == "split" and len(names) == 1:
            text = f"{names[0]} = {expr}[0]"
        else:
            text = f"{', '.join(names)} = {expr}"
        return f"@on({node.placement}) {text}" if node.placement else text

    def expr(self, node: Node) -> str:
        """The node as its op's DSL spelling (`OpDef.dsl`): an operator, indexing, or a call of its
        builtin, its leading required attributes positional, the rest keywords (a variadic operand
        alone is a list)."""
        opdef = get_op(node.op)
        args = [self.ref(v) for v in node.operands]
        spelling = opdef.dsl
        if spelling is None:
            raise ShipeiError(f"op '{node.op}' has no DSL spelling", node.loc)
        if spelling.operator == "[]":
            return self.slice_expr(node, args)
        if spelling.operator:
            return f"{args[0]} {spelling.operator} {args[1]}" if len(args) == 2 else f"{spelling.operator}{args[0]}"
        if opdef.variadic and len(opdef.operands) == 1:
            args = [f"[{', '.join(args)}]"]
        positional = True  # required attributes are positional while they lead, as Python binds them
        for k, v in node.attrs.items():
            spec = opdef.attrs[k]
            if not (v is None and spec.kind is AttrKind.OPT_INTS):
                positional = positional and spec.required
                text = self.attr(spec.kind, v)
                args.append(text if positional else f"{spelling.keyword(k)}={text}")
        return f"{opdef.function}({', '.join(args)})"

    def attr(self, kind: AttrKind, value: Any) -> str:
        if kind is AttrKind.DIMS:
            return "[" + ", ".join(format_dim(d) for d in value) + "]"
        return literal(value)

    def slice_expr(self, node: Node, args: list[str]) -> str:
        x = node.operands[0]
        items = [":"] * x.type.rank
        for axis, start, stop, step in zip(*(node.attrs[k] for k in ("axes", "starts", "stops", "steps"))):
            dim = x.shape[axis]
            start, stop, step = slice(start, stop, step).indices(dim)
            items[axis % x.type.rank] = f"{start}:{stop}" + (f":{step}" if step != 1 else "")
        return f"{args[0]}[{', '.join(items)}]"
