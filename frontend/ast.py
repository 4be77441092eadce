"""The DSL's syntax tree, as `parse.py` builds it and the elaborator reads it.

Nodes are frozen dataclasses; sequences are tuples, so a tree is immutable and hashable. Every
node ends with `loc`, the token a diagnostic about the node should point at:

- definitions (`LayerDef`, `CParam`, `ParamDecl`, `Method`, `Arg`, `Keyword`): the defined name;
  `Import`: the path string; `TensorTypeExpr`: the dtype;
- operators (`BinOp`, `UnaryOp`, `Compare`, `BoolOp`, `Not`) and `Assign`: the operator (`=`);
- `Call` and `Index`: the opening bracket; `Attribute`: the attribute's name; `Slice`: its first
  `:`; `TupleExpr` / `ListExpr`: the opening bracket;
- other statements: their keyword (`for`, `if`, `return`, `on`, `@on`); `ExprStmt`: its call's.

Equality includes `loc`, so two nodes are equal only if they are the same text at the same place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shipei.ir.errors import SourceLoc
from shipei.ir.placement import Placement

DTYPES = ("f16", "bf16", "f32", "f64", "i32", "i64", "bool")
"""The dtype names a tensor type may start with."""


# ---- expressions ----


@dataclass(frozen=True)
class Name:
    id: str
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Int:
    value: int
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Float:
    value: float
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Bool:
    value: bool
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Str:
    """A string literal with its escapes decoded; the DSL uses strings only for import paths."""

    value: str
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class BinOp:
    """Arithmetic: op is one of + - * / // % @ **."""

    op: str
    left: Expr
    right: Expr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class UnaryOp:
    """op is - or +."""

    op: str
    operand: Expr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Compare:
    """op is one of == != < <= > >=; comparisons do not chain."""

    op: str
    left: Expr
    right: Expr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class BoolOp:
    """op is "and" or "or"; chains nest to the left like arithmetic."""

    op: Literal["and", "or"]
    left: Expr
    right: Expr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Not:
    operand: Expr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Keyword:
    """A keyword argument `name=value` of a call."""

    name: str
    value: Expr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Call:
    """`func(args, kw=value)`; the parser guarantees no positional argument follows a keyword."""

    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Attribute:
    value: Expr
    name: str
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Slice:
    """`start:stop:step` inside an index; an omitted part is None."""

    start: Expr | None
    stop: Expr | None
    step: Expr | None
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class EllipsisLit:
    """`...`: in an index, or as the first dim of a tensor type."""

    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Index:
    """`value[items]`; each item is an expression, a `Slice` or an `EllipsisLit`."""

    value: Expr
    items: tuple[Expr | Slice | EllipsisLit, ...]
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class TupleExpr:
    elts: tuple[Expr, ...]
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class ListExpr:
    elts: tuple[Expr, ...]
    loc: SourceLoc = field(repr=False)


Expr = (Name | Int | Float | Bool | Str | BinOp | UnaryOp | Compare | BoolOp | Not | Call | Attribute
        | Index | TupleExpr | ListExpr)


# ---- types ----


@dataclass(frozen=True)
class TensorTypeExpr:
    """`dtype[dims]`; `f32[]` is a scalar.

    dtype is one of `DTYPES`. Each dim is an `Int`, a `Name` (a symbol), a `BinOp` with op in
    + - * // % over dims, or an `EllipsisLit`, which only the first dim may be.
    """

    dtype: str
    dims: tuple[Expr | EllipsisLit, ...]
    loc: SourceLoc = field(repr=False)


# ---- statements (method bodies) ----


@dataclass(frozen=True)
class Assign:
    """`t1, t2 = value`. One target binds the whole value; several unpack it.

    A target is a `Name` or an `Index` of a `Name` with one expression item (`blocks[i]`);
    `(a, b) = v` is stored as the two targets of `a, b = v`.
    """

    targets: tuple[Name | Index, ...]
    value: Expr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Return:
    values: tuple[Expr, ...]
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class For:
    """`for var in iter { body }`, in a layer body (body holds Items) or a method (Stmts)."""

    var: str
    iter: Expr
    body: tuple[Item, ...] | tuple[Stmt, ...]
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class If:
    """`if cond { then } else { orelse }`; orelse is () without else, `(If,)` for `else if`."""

    cond: Expr
    then: tuple[Item, ...] | tuple[Stmt, ...]
    orelse: tuple[Item, ...] | tuple[Stmt, ...]
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class On:
    """Placement: `on gpu { body }`, and also `@on(jax:cpu) stmt`, which becomes `On(jax:cpu, (stmt,))`.

    An `On` opens no scope: names it assigns are visible after it.
    """

    placement: Placement
    body: tuple[Stmt, ...]
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class ExprStmt:
    """A call standing alone; the parser rejects any other expression as a statement."""

    value: Call
    loc: SourceLoc = field(repr=False)


Stmt = Assign | Return | For | If | On | ExprStmt


# ---- layer and model definitions ----


@dataclass(frozen=True)
class ParamDecl:
    """`param name: type = init` (trainable) or `buffer name: type = init` (state)."""

    kind: Literal["param", "buffer"]
    name: str
    type: TensorTypeExpr
    init: Expr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Arg:
    name: str
    type: TensorTypeExpr
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Method:
    """`name(args) -> returns { body }`; `forward` is the one every layer needs."""

    name: str
    args: tuple[Arg, ...]
    returns: tuple[TensorTypeExpr, ...]
    body: tuple[Stmt, ...]
    loc: SourceLoc = field(repr=False)


Item = ParamDecl | Assign | For | If | Method
"""A member of a layer body. Its `Assign` has one target, a `Name` or `Name[expr]` (sub-layer)."""


@dataclass(frozen=True)
class CParam:
    """A compile-time parameter `name: type_name = default`; type_name is not checked here."""

    name: str
    type_name: str
    default: Expr | None
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class LayerDef:
    kind: Literal["model", "layer"]
    name: str
    cparams: tuple[CParam, ...]
    body: tuple[Item, ...]
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Import:
    """`import "path.sp"`; the path is relative to the importing file and is not resolved here."""

    path: str
    loc: SourceLoc = field(repr=False)


@dataclass(frozen=True)
class Module:
    """One source file; loc is its line 1, column 1."""

    items: tuple[Import | LayerDef, ...]
    file: str
    loc: SourceLoc = field(repr=False)
