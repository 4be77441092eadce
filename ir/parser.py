"""IR text → `Graph`: the inverse of `ir.printer`, and the one place its errors get locations.

The grammar (grammars/ir.lark) is LALR(1) and loaded once; its transformer runs during the parse
and returns plain records, so parsing is linear. `_Builder` then resolves value names, coerces
attributes with the registry and re-infers every result type, checking it against the written
one, so parsed text is always valid IR. Every failure, syntactic or semantic, is a `ShipeiError`
with file:line:col and the caret line.

The parser reads a little more than the printer writes, for hand-written IR in tests: node
results may have any `%name` (they are renumbered when printed), attributes may come in any order
and defaults may be left out, and `//` starts a comment.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from typing import Any, NamedTuple

import numpy as np
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from .errors import ShipeiError, SourceLoc, did_you_mean
from .graph import Graph, Init, Node, ParamInfo, Value
from .init import check_init
from .placement import Placement
from .registry import AttrKind, OpDef, all_ops, coerce_attr, get_op
from .types import Dim, DType, Sym, TensorType, dim_add, dim_mul, dim_neg, dim_sub
from .verifier import IDENTIFIER


def parse_ir(text: str, file: str = "<ir>") -> Graph:
    """Parse the text of one graph; `file` is only used in error locations."""
    try:
        return _Builder().build(_parser().parse(text, start="start"))
    except UnexpectedInput as err:
        error = _syntax_error(err)
    except ShipeiError as err:
        error = err
    # Errors raised during the parse carry only line:col; the file and caret line are added here.
    line, col = error.loc.line, error.loc.col
    lines = text.split("\n")
    source = lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""
    raise ShipeiError(error.message, SourceLoc(file, line, col, source), error.hint) from None


def _error(message: str, tok: Token, hint: str | None = None) -> ShipeiError:
    return ShipeiError(message, SourceLoc("", tok.line, tok.column), hint)


# ---- records: what the transformer makes of the text ----

class _Typed(NamedTuple):
    type: TensorType
    tok: Token


class _Arg(NamedTuple):
    name: Token
    kind: Token | None  # PARAM, BUFFER or None for a data input
    typed: _Typed
    init: tuple[Token, list[tuple[Token, Any]]] | None


class _NodeText(NamedTuple):
    results: list[Token]
    op: Token
    operands: list[Token]
    attrs: list[tuple[Token, Any]]
    types: list[_Typed]
    placement: Placement | None
    loc: SourceLoc | None


class _Region(NamedTuple):
    group: Token
    nodes: list[_NodeText]


class _GraphText(NamedTuple):
    name: Token
    args: list[_Arg]
    types: list[_Typed]
    nodes: list[_NodeText | _Region]
    ret: Token
    outputs: list[Token]


_SCALAR_WORDS = {"true": True, "false": False, "inf": math.inf, "nan": math.nan}


@v_args(inline=True)
class _Records(Transformer):
    """One method per grammar rule (or alias); `[x]` arrives as None when absent."""

    def start(self, _graph, name, args, types, *rest):
        *nodes, (ret, outputs) = rest
        return _GraphText(name, args or [], types or [], nodes, ret, outputs)

    def _items(self, *items):
        return list(items)

    args = values = attrs = init_args = value_items = element_items = _items

    def types(self, *types):
        return [_tensor_type(t) for t in types]

    def arg(self, name, kind, type, init):
        return _Arg(name, kind, _tensor_type(type), init)

    def init(self, name, args):
        return name, args or []

    def init_arg(self, key, value):
        return key, value

    def node(self, results, op, operands, attrs, types, placement, loc):
        return _NodeText(results, op, operands or [], attrs or [], types, placement, loc)

    def region(self, _group, group, *nodes):
        return _Region(group, list(nodes))

    def nothing(self):
        return []

    def attr(self, name, value):
        return name, value

    def placement(self, _on, *words):
        return Placement.parse(":".join(words), SourceLoc("", words[0].line, words[0].column))

    def loc(self, _loc, file, line, col):
        return SourceLoc(_string(file), int(line), int(col))

    def ret(self, ret, values):
        return ret, values or []

    def dims(self, *dims):
        return dims

    def add(self, a, b):
        return dim_add(a, b)

    def sub(self, a, b):
        return dim_sub(a, b)

    def mul(self, a, b):
        return dim_mul(a, b)

    def neg(self, a):
        return dim_neg(a)

    def sym(self, name):
        return Sym.named(str(name))

    def int_(self, tok):
        return int(tok)

    def neg_int(self, tok):
        return -int(tok)

    def float_(self, tok):
        return float(tok)

    def neg_float(self, tok):
        return -float(tok)

    def string(self, tok):
        return _string(tok)

    def list_(self, items):
        return items or []

    def word(self, tok):
        if tok not in _SCALAR_WORDS:
            raise _error(f"expected a number, true or false, got '{tok}'", tok)
        return _SCALAR_WORDS[tok]

    def neg_word(self, tok):
        if tok != "inf":
            raise _error(f"expected a number after '-', got '{tok}'", tok)
        return -math.inf

    def shape(self, *dims):
        return tuple(int(d) for d in dims)

    def array(self, kw, elements, shape):
        if kw != "array":
            raise _error(f"unknown literal '{kw}<...>'", kw, hint="arrays are written array<...>")
        try:
            array = np.asarray(elements)
        except ValueError:
            raise _error("array elements must be nested lists of one shape", kw) from None
        try:
            DType.of_numpy(array.dtype)
        except ShipeiError:
            raise _error("array elements must be bools, ints or floats (ints within 64 bits)", kw) from None
        if shape is None:
            return array
        if array.size or 0 not in shape:
            raise _error(f"array with {array.size} elements cannot have the written shape {list(shape)}", kw,
                         hint="only an array with no elements writes its shape: array<[] : [0, 3]>")
        return array.reshape(shape)


def _string(tok: Token) -> str:
    try:
        return json.loads(tok)
    except json.JSONDecodeError as err:
        raise _error(f"bad string literal: {err.msg}", tok) from None


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("shipei.grammars").joinpath("ir.lark").read_text("utf-8")
    return Lark(grammar, parser="lalr", start=["start", "dims"], transformer=_Records(), maybe_placeholders=True)


def _tensor_type(tok: Token) -> _Typed:
    """A TYPE token such as `f32[B*T, 784]` as a TensorType; errors point into the token."""
    dtype, _, dims = tok[:-1].partition("[")
    try:
        return _Typed(TensorType(DType(dtype), _dims(dims)), tok)
    except ValueError:
        raise _error(f"unknown dtype '{dtype}'", tok, hint=f"dtypes are {', '.join(d.value for d in DType)}") from None
    except UnexpectedInput as err:
        inner = _syntax_error(err)  # within the dims, whose end is the type's ']'
        loc = SourceLoc("", tok.line, tok.column + len(dtype) + inner.loc.col)
        raise ShipeiError(inner.message.replace("end of input", "']'"), loc) from None
    except ShipeiError as err:  # a dim out of range
        if err.loc is not None:
            raise
        raise _error(err.message, tok, err.hint) from None


@functools.lru_cache(maxsize=4096)
def _dims(text: str) -> tuple[Dim, ...]:
    return _parser().parse(text, start="dims") if text.strip() else ()


# ---- names, attributes and types ----

_FLOAT_WORDS = {Sym.named("inf"): math.inf, dim_neg(Sym.named("inf")): -math.inf, Sym.named("nan"): math.nan}


def _read(kind: AttrKind, raw: Any, tok: Token) -> Any:
    """An attribute value as `kind` wants it. A bare word parses as a dim symbol, so words that
    are literals of some kind (true, none, inf, f32) are read here; the rest is left for
    `coerce_attr` to accept or reject."""
    word = str(raw) if isinstance(raw, Sym) and str(raw) in raw.symbols else None
    if kind is AttrKind.BOOL and word in ("true", "false"):
        return word == "true"
    if kind is AttrKind.DTYPE and word:
        return word
    if kind is AttrKind.OPT_INTS and word == "none":
        return None
    if kind is AttrKind.FLOAT and isinstance(raw, Sym):
        return _FLOAT_WORDS.get(raw, raw)
    if kind is AttrKind.ARRAY and not isinstance(raw, np.ndarray):
        raise _error(f"attribute '{tok}' must be an array, written array<...>", tok)
    return raw


class _Builder:
    """Turns the records into a graph; each value name maps to its value once defined."""

    def __init__(self) -> None:
        self.values: dict[str, Value] = {}

    def build(self, text: _GraphText) -> Graph:
        graph = Graph(text.name[1:])
        for arg in text.args:
            self._arg(graph, arg)
        groups: set[int] = set()
        for item in text.nodes:
            if isinstance(item, _NodeText):
                graph.nodes.append(self._node(item))
                continue
            group = int(item.group)
            if group in groups:
                raise _error(f"group {group} appears twice", item.group,
                             hint="a group is one run of consecutive nodes; give the other run a new id")
            groups.add(group)
            for node_text in item.nodes:
                node = self._node(node_text)
                node.group = group
                graph.nodes.append(node)
        graph.outputs = [self._use(tok) for tok in text.outputs]
        if len(graph.outputs) != len(text.types):
            raise _error(f"return gives {len(graph.outputs)} values, but the signature declares "
                         f"{len(text.types)} results", text.ret)
        for value, tok, declared in zip(graph.outputs, text.outputs, text.types, strict=True):
            if value.type != declared.type:
                raise _error(f"{tok} has type {value.type}, but the signature declares {declared.type}", tok)
        return graph

    def _define(self, tok: Token, value: Value) -> None:
        if tok in self.values:
            raise _error(f"{tok} is defined twice", tok)
        self.values[str(tok)] = value

    def _use(self, tok: Token) -> Value:
        if tok not in self.values:
            raise _error(f"{tok} is not defined", tok, hint="a value is defined before its first use")
        return self.values[tok]

    def _arg(self, graph: Graph, arg: _Arg) -> None:
        name, type = arg.name[1:], arg.typed.type
        if not IDENTIFIER.fullmatch(name):
            raise _error(f"'{arg.name}' cannot name an input or param", arg.name,
                         hint="their names start with a letter or '_'; %0, %1, ... name node results")
        if arg.kind is None:
            if arg.init:
                raise _error(f"input {arg.name} cannot have an initializer", arg.init[0],
                             hint=f"a weight is written '{arg.name}: param {type} = ...'")
            if graph.params:
                raise _error(f"input {arg.name} follows a param", arg.name, hint="inputs come before params")
            value = Value(type, name)
            graph.inputs.append(value)
        else:
            if arg.init is None:
                raise _error(f"{arg.kind} {arg.name} needs an initializer", arg.kind, hint="e.g. '= zeros()'")
            if not type.is_static:
                raise _error(f"{arg.kind} {arg.name} has a symbolic shape {type}", arg.typed.tok,
                             hint="params and buffers have static shapes")
            value = Value(type, name, param=ParamInfo(self._init(*arg.init), buffer=arg.kind == "buffer"))
            graph.params.append(value)
        self._define(arg.name, value)

    def _init(self, name: Token, args: list[tuple[Token, Any]]) -> Init:
        seen: set[str] = set()
        for key, _ in args:
            if key in seen:
                raise _error(f"initializer argument '{key}' is given twice", key)
            seen.add(key)
        init = Init(str(name), tuple((str(key), value) for key, value in args))
        try:
            check_init(init)
        except ShipeiError as err:
            raise _error(err.message, name, err.hint) from None
        return init

    def _node(self, text: _NodeText) -> Node:
        op = text.op
        opdef = self._opdef(op)
        operands = [self._use(tok) for tok in text.operands]
        attrs = self._attrs(opdef, text)
        try:
            types = opdef.infer(operands, attrs)
        except ShipeiError as err:
            raise _error(f"{op}: {err.message}", op, err.hint) from None
        if len(text.results) != len(types):
            raise _error(f"{op} has {len(types)} result(s) here, but {len(text.results)} name(s) are written", op)
        if len(text.types) != len(types):
            raise _error(f"{op} has {len(types)} result(s) here, but {len(text.types)} type(s) are written", op)
        for i, (inferred, written) in enumerate(zip(types, text.types, strict=True)):
            if inferred != written.type:
                raise _error(f"result {i} of {op} has type {inferred}, not {written.type}", written.tok)
        node = Node(str(op), operands, attrs, loc=text.loc, placement=text.placement)
        node.results = [Value(t, producer=node, index=i) for i, t in enumerate(types)]
        for tok, result in zip(text.results, node.results, strict=True):
            self._define(tok, result)
        return node

    @staticmethod
    def _opdef(op: Token) -> OpDef:
        try:
            return get_op(op)
        except ShipeiError:
            raise _error(f"unknown op '{op}'", op, hint=did_you_mean(op, all_ops())) from None

    @staticmethod
    def _attrs(opdef: OpDef, text: _NodeText) -> dict[str, Any]:
        given: dict[str, Any] = {}
        for name, raw in text.attrs:
            spec = opdef.attrs.get(name)
            if spec is None:
                raise _error(f"{opdef.name} has no attribute '{name}'", name,
                             hint=f"its attributes are {', '.join(opdef.attrs) or 'none'}")
            if name in given:
                raise _error(f"attribute '{name}' is given twice", name)
            try:
                given[str(name)] = coerce_attr(opdef.name, str(name), spec.kind, _read(spec.kind, raw, name), None)
            except ShipeiError as err:
                raise _error(err.message, name, err.hint) from None
        try:
            return opdef.complete_attrs(given)
        except ShipeiError as err:
            raise _error(err.message, text.op, err.hint) from None


# ---- syntax errors ----

_WORDS = {"TYPE": "a type (f32[B, 784])", "VALUE": "a value (%name)", "GLOBAL": "a graph name (@name)",
          "NAME": "a name", "INT": "an integer", "FLOAT": "a float", "STRING": "a string", "$END": "end of input"}


def _describe(terminal: str) -> str:
    if terminal in _WORDS:
        return _WORDS[terminal]
    pattern = _parser().get_terminal(terminal).pattern
    return f"'{pattern.value}'" if isinstance(pattern, PatternStr) else terminal


def _syntax_error(err: UnexpectedInput) -> ShipeiError:
    """Lark's error in the user's terms, at the offending token or character."""
    if not isinstance(err, UnexpectedToken):
        return ShipeiError(f"unexpected character {err.char!r}", SourceLoc("", err.line, err.column))
    tok = err.token
    expected = sorted({_describe(t) for t in err.accepts or err.expected})
    what = "one of " + ", ".join(expected) if len(expected) > 1 else expected[0]
    if tok.type == "$END":  # Lark puts the end token at the last token; point just past it
        line, col = (tok.end_line, tok.end_column) if tok.end_line else (1, 1)
        return ShipeiError(f"unexpected end of input, expected {what}", SourceLoc("", line, col))
    return ShipeiError(f"unexpected '{tok}', expected {what}", SourceLoc("", tok.line, tok.column))
