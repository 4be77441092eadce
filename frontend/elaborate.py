"""Elaboration: AST to typed IR. Resolves names, evaluates compile-time values, instantiates
layers (their params become graph params under dotted PyTorch-style names), unrolls static
`for`/`if`, inlines each layer's forward at its call, and checks every signature.

Compile-time values are plain Python (int, float, bool, str, lists, tuples, `DType`, `Sym`
dims); tensors are IR `Value`s. Nodes get the location of the user's statement they came from,
so generated code quotes the user's line, not the prelude's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ir.errors import ShipeiError, SourceLoc, did_you_mean
from ..ir.graph import Builder, Graph, Init, Value
from ..ir.init import check_init
from ..ir.placement import Placement
from ..ir.registry import all_ops, generation
from ..ir.types import Dim, DType, Sym, TensorType, dim_add, dim_floordiv, dim_mod, dim_mul, dim_neg, dim_sub
from . import ast, limits
from .builtins import BoundMethod, Builtin, Context, bind_arguments, builtins, describe, tensor_attribute
from .scope import Scope
from .signature import bind_signature, check_returns
from .source import PRELUDE_FILE, Definitions

CONSTANTS: dict[str, Any] = {"inf": math.inf, "nan": math.nan, "pi": math.pi,
                             **{d.value: d for d in DType}}


@dataclass(eq=False)
class LayerInstance:
    """A layer with its compile-time arguments bound and its params declared under `path`; `loc`
    is where the user's source declares it (or the user's layer that holds it)."""

    definition: ast.LayerDef
    path: str
    scope: Scope
    loc: SourceLoc
    forward: ast.Method | None = None
    loss: ast.Method | None = None  # a model's: what training makes small

    def describe(self) -> str:
        return f"the layer {self.path or self.definition.name} ({self.definition.name})"


@dataclass(eq=False)
class LayerList:
    """Sub-layers declared as `name[i] = Layer(...)`, PyTorch's ModuleList."""

    path: str
    items: dict[int, LayerInstance] = field(default_factory=dict)

    def describe(self) -> str:
        return f"the layer list {self.path}"


@dataclass(frozen=True)
class LayerRef:
    """A layer definition named in source, not yet instantiated."""

    definition: ast.LayerDef

    def describe(self) -> str:
        return f"the layer definition {self.definition.name}"


@contextmanager
def _from_prelude(where: SourceLoc, what: str) -> Iterator[None]:
    """Report an error raised inside a prelude layer at `where`, the user's line that led there,
    with the prelude's line as a note: the user can change only their own source."""
    try:
        yield
    except ShipeiError as e:
        if e.loc is None or e.loc.file != PRELUDE_FILE or where.file == PRELUDE_FILE:
            raise
        raise ShipeiError(e.message, where, e.hint, ((f"inside {what}", e.loc), *e.notes)) from None


def refine(outer: Placement | None, inner: Placement, loc: SourceLoc) -> Placement:
    """A hint inside another: `on jax { on gpu { ... } }` is jax on a GPU; naming two targets or
    two devices at once is an error."""
    if outer is None:
        return inner
    for field_name in ("target", "device", "index"):
        a, b = getattr(outer, field_name), getattr(inner, field_name)
        if a is not None and b is not None and a != b:
            raise ShipeiError(f"'on {inner}' inside 'on {outer}' asks for two {field_name}s", loc)
    return Placement(inner.target or outer.target, inner.device or outer.device,
                     inner.index if inner.index is not None else outer.index)


def _check_new_member(scope: Scope, name: str, loc: SourceLoc) -> None:
    """A layer's params, sub-layers and layer lists share one namespace, as their state_dict
    paths do: a second declaration of a name is an error, not a silent replacement."""
    existing = scope.names.get(name)
    if isinstance(existing, Value) and existing.param is not None:
        first = existing.param.loc
    elif isinstance(existing, LayerInstance):
        first = existing.loc
    elif isinstance(existing, LayerList):
        first = None
    else:
        return
    raise ShipeiError(f"'{name}' is already declared in this layer", loc,
                      hint=f"first declared at {first}" if first else None)


class _Level:
    """One level of nesting of expressions and layers (`Elaborator.nested`)."""

    __slots__ = ("elab", "loc")

    def __init__(self, elab: Elaborator, loc: SourceLoc):
        self.elab, self.loc = elab, loc

    def __enter__(self) -> None:
        if self.elab.depth >= limits.NESTING:
            raise ShipeiError(f"nested too deeply: more than {limits.NESTING} levels of expressions and layer calls",
                              self.loc, hint="name intermediate results, or use a for loop")
        self.elab.depth += 1

    def __exit__(self, *exc: object) -> None:
        self.elab.depth -= 1


class _At:
    """The location new nodes get while it is entered (`Elaborator.at`); None keeps the current one."""

    __slots__ = ("builder", "loc", "saved")

    def __init__(self, builder: Builder, loc: SourceLoc | None):
        self.builder, self.loc = builder, loc

    def __enter__(self) -> None:
        self.saved = self.builder.loc
        if self.loc is not None:
            self.builder.loc = self.loc

    def __exit__(self, *exc: object) -> None:
        self.builder.loc = self.saved


class _Returned(Exception):
    """Unwinds statement execution at `return`."""

    def __init__(self, values: list[Any], loc: SourceLoc):
        self.values = values
        self.loc = loc


class Elaborator:
    def __init__(self, defs: Definitions, graph: Graph):
        self.defs = defs
        self.b = Builder(graph)
        self.globals = Scope()
        self.globals.names.update(CONSTANTS)
        self.globals.names.update(builtins())
        self.globals.names.update({name: LayerRef(d) for name, d in defs.layers.items()})
        self.depth = 0  # nesting of expressions and layers being elaborated (limits.NESTING)
        self.iterations = 0  # of every static for loop so far (limits.Limits.loop)
        self.instances = 0  # layers instantiated so far, counted in limits.Limits.size

    def nested(self, loc: SourceLoc) -> _Level:
        """A level of nesting; past `limits.NESTING` a located error rather than Python's stack."""
        return _Level(self, loc)

    def check_size(self, loc: SourceLoc) -> None:
        graph = self.b.graph
        size = limits.active().size
        if len(graph.nodes) + len(graph.params) + self.instances > size:
            raise ShipeiError(f"the model grew past {size:,} ops, params and layers", loc,
                              hint="raise the limit with --max-size (shipei.parse(..., limits=Limits(size=...)))")

    def loop(self, stmt: ast.For, scope: Scope) -> Iterator[None]:
        """Bind the loop variable to each item in turn, counting iterations against the limit."""
        budget = limits.active().loop
        for value in self.iterate(stmt.iter, scope):
            self.iterations += 1
            if self.iterations > budget:
                raise ShipeiError(f"static loops ran past {budget:,} iterations in all", stmt.loc,
                                  hint="raise the limit with --max-loop (shipei.parse(..., limits=Limits(loop=...)))")
            scope.names[stmt.var] = value
            yield

    # -- layers ---------------------------------------------------------------------------
    def instantiate(self, ldef: ast.LayerDef, args: Sequence[Any], kwargs: dict[str, Any], path: str,
                    loc: SourceLoc, user_loc: SourceLoc) -> LayerInstance:
        """Bind a layer's arguments and run its body. `loc` is the call that creates it and `user_loc`
        the user's line it comes from: an error inside a prelude layer is reported there."""
        with self.nested(loc), _from_prelude(loc, f"the prelude's {ldef.name}"):
            self.instances += 1
            self.check_size(loc)
            scope = self.bind_cparams(ldef, args, kwargs, loc)
            inst = LayerInstance(ldef, path, scope, loc if loc.file != PRELUDE_FILE else user_loc)
            self.exec_items(ldef.body, inst, scope)
            if inst.forward is None:
                raise ShipeiError(f"layer '{ldef.name}' has no forward method", ldef.loc)
            return inst

    def bind_cparams(self, ldef: ast.LayerDef, args: Sequence[Any], kwargs: dict[str, Any],
                     loc: SourceLoc) -> Scope:
        """A layer's scope holding its compile-time arguments, checked against its declaration.
        Defaults may use earlier parameters: `d_ff: int = 4 * d_model`."""
        given = bind_arguments(ldef.name, [cp.name for cp in ldef.cparams], args, kwargs, loc, "parameter")
        scope = Scope(self.globals)
        for cp in ldef.cparams:
            if cp.name in given:
                scope.names[cp.name] = check_cparam(cp, given[cp.name], loc)
            elif cp.default is None:
                raise ShipeiError(f"{ldef.name} needs parameter '{cp.name}'", loc)
            else:
                scope.names[cp.name] = check_cparam(cp, self.eval(cp.default, scope), cp.default.loc)
        return scope

    def exec_items(self, items: Sequence[Any], inst: LayerInstance, scope: Scope) -> None:
        for item in items:
            self.check_size(item.loc)
            if isinstance(item, ast.ParamDecl):
                self.declare_param(item, inst, scope)
            elif isinstance(item, ast.Method):
                if item.name == "loss" and inst.definition.kind == "model":
                    inst.loss = item
                elif item.name == "forward":
                    inst.forward = item
                else:
                    raise ShipeiError(f"unknown method '{item.name}'", item.loc,
                                      hint="layers define forward(...); a model may also define loss(...)")
            elif isinstance(item, ast.Assign):
                self.item_assign(item, inst, scope)
            elif isinstance(item, ast.For):
                for _ in self.loop(item, scope):
                    self.exec_items(item.body, inst, scope)
            elif isinstance(item, ast.If):
                self.exec_items(item.then if self.condition(item.cond, scope) else item.orelse, inst, scope)
            else:
                raise ShipeiError("this statement belongs inside forward", item.loc)

    def declare_param(self, decl: ast.ParamDecl, inst: LayerInstance, scope: Scope) -> None:
        type_ = self.tensor_type(decl.type, scope, None)
        init = decl.init
        if not (isinstance(init, ast.Call) and isinstance(init.func, ast.Name)):
            raise ShipeiError("a param's initializer is a call such as zeros() or normal(std=0.02)", init.loc)
        if init.args:
            raise ShipeiError("initializer arguments are passed by name, e.g. uniform(low=-0.1, high=0.1)",
                              init.args[0].loc)
        kwargs = tuple((k.name, self.eval(k.value, scope)) for k in init.kwargs)
        for (key, value), kw in zip(kwargs, init.kwargs):
            if not isinstance(value, (int, float, bool)):
                raise ShipeiError(f"initializer argument '{key}' must be a number, got {describe(value)}", kw.loc)
        spec = Init(init.func.id, kwargs)
        try:
            check_init(spec)
        except ShipeiError as e:
            raise ShipeiError(e.message, init.loc, e.hint) from None
        name = f"{inst.path}.{decl.name}" if inst.path else decl.name
        _check_new_member(scope, decl.name, decl.loc)
        with self.at(decl.loc if decl.loc.file != PRELUDE_FILE else inst.loc):
            scope.names[decl.name] = self.b.add_param(name, type_, spec, buffer=decl.kind == "buffer")

    def item_assign(self, item: ast.Assign, inst: LayerInstance, scope: Scope) -> None:
        (target,) = item.targets
        if isinstance(target, ast.Index):
            base = target.value.id
            (index_expr,) = target.items
            index = self.eval(index_expr, scope)
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise ShipeiError(f"a layer list index must be a non-negative int, got {describe(index)}",
                                  index_expr.loc)
            holder = scope.names.get(base)
            if holder is None:
                _check_new_member(scope, base, target.loc)
                holder = scope.names[base] = LayerList(f"{inst.path}.{base}" if inst.path else base)
            if not isinstance(holder, LayerList):
                raise ShipeiError(f"'{base}' is already {describe(holder)}", target.loc)
            if index in holder.items:
                raise ShipeiError(f"{holder.path}[{index}] is already declared", target.loc,
                                  hint=f"first declared at {holder.items[index].loc}")
            path = f"{holder.path}.{index}"
            holder.items[index] = self.sublayer(item.value, scope, path, inst)
            return
        path = f"{inst.path}.{target.id}" if inst.path else target.id
        value = item.value
        if isinstance(value, ast.Call) and isinstance(self.eval(value.func, scope), LayerRef):
            _check_new_member(scope, target.id, target.loc)
            scope.names[target.id] = self.sublayer(value, scope, path, inst)
        else:
            scope.names[target.id] = self.eval(value, scope)

    def sublayer(self, call: ast.Expr, scope: Scope, path: str, parent: LayerInstance) -> LayerInstance:
        ref = self.eval(call.func, scope) if isinstance(call, ast.Call) else None
        if not isinstance(ref, LayerRef):
            raise ShipeiError("expected a layer instantiation such as Linear(4, 8)", call.loc)
        args, kwargs = self.call_args(call, scope)
        return self.instantiate(ref.definition, args, kwargs, path, call.loc, parent.loc)

    # -- forward --------------------------------------------------------------------------
    def call_layer(self, inst: LayerInstance, args: list[Any], loc: SourceLoc) -> Any:
        method = inst.forward
        scope = Scope(inst.scope)
        values = [Context(self.b, loc).tensor(a, what=f"argument {i + 1} of {inst.path}") for i, a in enumerate(args)]
        scope.names.update(bind_signature(method, values, inst.scope, self.eval_dim_expr, loc,
                                          f"{inst.path or inst.definition.name}"))
        outer, self.b.module = self.b.module, inst.path  # nodes built here belong to this layer
        if inst.path:
            self.b.graph.layers[inst.path] = inst.definition.name
        try:
            with self.nested(loc), _from_prelude(loc, f"the forward of the prelude's {inst.definition.name}"):
                try:
                    self.exec_stmts(method.body, scope)
                except _Returned as r:
                    return self.finish_call(method, r, scope, loc, inst)
                raise ShipeiError(f"forward of '{inst.definition.name}' ends without return", method.loc)
        finally:
            self.b.module = outer

    def finish_call(self, method: ast.Method, r: _Returned, scope: Scope, loc: SourceLoc,
                    inst: LayerInstance) -> Any:
        ctx = Context(self.b, r.loc)
        values = [ctx.tensor(v, what="a returned value") for v in r.values]
        check_returns(method, values, scope, self.eval_dim_expr, r.loc, inst.path or inst.definition.name)
        return values[0] if len(values) == 1 else tuple(values)

    def exec_stmts(self, stmts: Sequence[Any], scope: Scope) -> None:
        for stmt in stmts:
            self.check_size(stmt.loc)
            with self.at(stmt.loc, statement=True):
                self.exec_stmt(stmt, scope)

    def exec_stmt(self, stmt: Any, scope: Scope) -> None:
        if isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value, scope)
            if len(stmt.targets) == 1:
                self.assign(scope, stmt.targets[0], value)
                return
            if not isinstance(value, tuple) or len(value) != len(stmt.targets):
                raise ShipeiError(f"cannot unpack {describe(value)} into {len(stmt.targets)} names", stmt.loc)
            for target, v in zip(stmt.targets, value):
                self.assign(scope, target, v)
        elif isinstance(stmt, ast.Return):
            raise _Returned([self.eval(v, scope) for v in stmt.values], stmt.loc)
        elif isinstance(stmt, ast.For):
            for _ in self.loop(stmt, scope):
                self.exec_stmts(stmt.body, scope)
        elif isinstance(stmt, ast.If):
            self.exec_stmts(stmt.then if self.condition(stmt.cond, scope) else stmt.orelse, scope)
        elif isinstance(stmt, ast.On):
            outer = self.b.placement
            self.b.placement = refine(outer, stmt.placement, stmt.loc)
            try:
                self.exec_stmts(stmt.body, scope)
            finally:
                self.b.placement = outer
        elif isinstance(stmt, ast.ExprStmt):
            self.eval(stmt.value, scope)
        else:
            raise ShipeiError("layer declarations belong in the layer body, not in forward", stmt.loc)

    def assign(self, scope: Scope, target: Any, value: Any) -> None:
        """Bind a name; a computed value the source names first keeps that name as its hint."""
        if not isinstance(target, ast.Name):
            raise ShipeiError("only names can be assigned in forward", target.loc)
        scope.names[target.id] = value
        if isinstance(value, Value) and value.producer is not None and value.hint is None:
            value.hint = target.id

    def at(self, loc: SourceLoc, statement: bool = False) -> _At:
        """Set the location new nodes get: the user's statement, never a prelude line."""
        return _At(self.b, loc if not statement or loc.file != PRELUDE_FILE else None)

    # -- expressions ----------------------------------------------------------------------
    def condition(self, expr: ast.Expr, scope: Scope) -> bool:
        value = self.eval(expr, scope)
        if isinstance(value, Value):
            if value.param is not None:
                return True  # a declared param, as in `if bias { ... }`
            raise ShipeiError("a condition must be known at compile time, not a tensor", expr.loc,
                              hint="use where(cond, a, b) to select between tensors")
        if isinstance(value, (LayerInstance, LayerList)):
            return True
        if isinstance(value, (bool, int, float, str)):
            return bool(value)
        raise ShipeiError(f"a condition must be a compile-time value, got {describe(value)}", expr.loc)

    def iterate(self, expr: ast.Expr, scope: Scope) -> list[Any]:
        value = self.eval(expr, scope)
        if isinstance(value, LayerList):
            return [value.items[i] for i in sorted(value.items)]
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ShipeiError(f"for loops run over range(n) or a list, got {describe(value)}", expr.loc)

    def call_args(self, call: ast.Call, scope: Scope) -> tuple[list[Any], dict[str, Any]]:
        args = [self.eval(a, scope) for a in call.args]
        kwargs: dict[str, Any] = {}
        for kw in call.kwargs:
            if kw.name in kwargs:
                raise ShipeiError(f"argument '{kw.name}' given twice", kw.loc)
            kwargs[kw.name] = self.eval(kw.value, scope)
        return args, kwargs

    def eval(self, expr: Any, scope: Scope) -> Any:
        method = getattr(self, f"eval_{type(expr).__name__}", None)
        if method is None:
            raise ShipeiError("this expression is not allowed here", expr.loc)
        try:
            with self.nested(expr.loc):
                return method(expr, scope)
        except ShipeiError as e:
            if e.loc is None:
                raise ShipeiError(e.message, expr.loc, e.hint, e.notes) from None
            raise

    def eval_Name(self, expr: ast.Name, scope: Scope) -> Any:
        try:
            return scope.lookup(expr.id)
        except KeyError:
            raise ShipeiError(f"unknown name '{expr.id}'", expr.loc,
                              hint=did_you_mean(expr.id, sorted(scope.visible()))) from None

    def eval_Int(self, expr: ast.Int, scope: Scope) -> int:
        return expr.value

    def eval_Float(self, expr: ast.Float, scope: Scope) -> float:
        return expr.value

    def eval_Bool(self, expr: ast.Bool, scope: Scope) -> bool:
        return expr.value

    def eval_Str(self, expr: ast.Str, scope: Scope) -> str:
        return expr.value

    def eval_TupleExpr(self, expr: ast.TupleExpr, scope: Scope) -> tuple:
        return tuple(self.eval(e, scope) for e in expr.elts)

    def eval_ListExpr(self, expr: ast.ListExpr, scope: Scope) -> list:
        return [self.eval(e, scope) for e in expr.elts]

    def eval_BinOp(self, expr: ast.BinOp, scope: Scope) -> Any:
        """A chain `a + b - c ...` (nested on its left) in a loop, so a long sum is one level deep."""
        chain = [expr]
        while isinstance(chain[-1].left, ast.BinOp):
            chain.append(chain[-1].left)
        value = self.eval(chain[-1].left, scope)
        for node in reversed(chain):
            try:
                value = self.binop(node, value, self.eval(node.right, scope))
            except ShipeiError as e:
                raise e if e.loc else ShipeiError(e.message, node.loc, e.hint, e.notes) from None
        return value

    def binop(self, expr: ast.BinOp, left: Any, right: Any) -> Any:
        if isinstance(left, Value) or isinstance(right, Value):
            ctx = Context(self.b, expr.loc)
            if expr.op == "//":
                return ctx.op("floor", ctx.op("div", *ctx.tensors(left, right)))
            binops = tensor_operators(comparison=False)
            if expr.op not in binops:
                raise ShipeiError(f"operator '{expr.op}' is not defined on tensors", expr.loc)
            return ctx.op(binops[expr.op], *ctx.tensors(left, right))
        return compile_time_binop(expr.op, left, right, expr.loc)

    def eval_UnaryOp(self, expr: ast.UnaryOp, scope: Scope) -> Any:
        value = self.eval(expr.operand, scope)
        if expr.op == "+":
            return value
        if isinstance(value, Value):
            return self.b(tensor_operators(comparison=False, arity=1)["-"], value)
        if isinstance(value, Sym):
            return dim_neg(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return checked_number(-value, f"-{value!r}", expr.loc)
        raise ShipeiError(f"cannot negate {describe(value)}", expr.loc)

    def eval_Compare(self, expr: ast.Compare, scope: Scope) -> Any:
        left, right = self.eval(expr.left, scope), self.eval(expr.right, scope)
        if isinstance(left, Value) or isinstance(right, Value):
            ctx = Context(self.b, expr.loc)
            return ctx.op(tensor_operators(comparison=True)[expr.op], *ctx.tensors(left, right))
        if expr.op in ("==", "!="):
            return (left == right) == (expr.op == "==")
        if isinstance(left, Sym) or isinstance(right, Sym):
            raise ShipeiError(f"cannot order symbolic dims {left} and {right} at compile time", expr.loc)
        try:
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[expr.op]
        except TypeError:
            raise ShipeiError(f"cannot compare {describe(left)} with {describe(right)}", expr.loc) from None

    def eval_BoolOp(self, expr: ast.BoolOp, scope: Scope) -> Any:
        left = self.eval(expr.left, scope)
        if isinstance(left, Value):
            ctx = Context(self.b, expr.loc)
            right = self.eval(expr.right, scope)
            return ctx.op(f"logical_{expr.op}", ctx.tensor(left), ctx.tensor(right, DType.bool))
        if not isinstance(left, bool):
            raise ShipeiError(f"'{expr.op}' needs bools, got {describe(left)}", expr.loc)
        if (expr.op == "and" and not left) or (expr.op == "or" and left):
            return left
        right = self.eval(expr.right, scope)
        if not isinstance(right, bool):
            raise ShipeiError(f"'{expr.op}' needs bools, got {describe(right)}", expr.loc)
        return right

    def eval_Not(self, expr: ast.Not, scope: Scope) -> Any:
        value = self.eval(expr.operand, scope)
        if isinstance(value, Value):
            return self.b("logical_not", value)
        if not isinstance(value, bool):
            raise ShipeiError(f"'not' needs a bool, got {describe(value)}", expr.loc)
        return not value

    def eval_Attribute(self, expr: ast.Attribute, scope: Scope) -> Any:
        value = self.eval(expr.value, scope)
        if isinstance(value, Value):
            return tensor_attribute(Context(self.b, expr.loc), value, expr.name)
        if isinstance(value, LayerInstance):
            try:
                return value.scope.names[expr.name]
            except KeyError:
                raise ShipeiError(f"{value.describe()} has no member '{expr.name}'", expr.loc) from None
        raise ShipeiError(f"{describe(value)} has no attribute '{expr.name}'", expr.loc)

    def eval_Call(self, expr: ast.Call, scope: Scope) -> Any:
        func = self.eval(expr.func, scope)
        args, kwargs = self.call_args(expr, scope)
        if isinstance(func, Builtin):
            return func.body(Context(self.b, expr.loc), **func.bind(args, kwargs, expr.loc))
        if isinstance(func, BoundMethod):
            return func.fn.body(Context(self.b, expr.loc), **func.fn.bind([func.self_value, *args], kwargs, expr.loc))
        if isinstance(func, LayerInstance):
            if kwargs:
                raise ShipeiError("layers are called with positional tensors", expr.loc)
            return self.call_layer(func, args, expr.loc)
        if isinstance(func, LayerRef):
            raise ShipeiError(f"layer '{func.definition.name}' must be created in the layer body, then called",
                              expr.loc, hint=f"declare `name = {func.definition.name}(...)` next to the params")
        raise ShipeiError(f"{describe(func)} is not callable", expr.loc)

    def eval_Index(self, expr: ast.Index, scope: Scope) -> Any:
        value = self.eval(expr.value, scope)
        if isinstance(value, Value):
            from .indexing import index_tensor

            items = [self.eval_subscript(item, scope) for item in expr.items]
            return index_tensor(Context(self.b, expr.loc), value, items)
        if len(expr.items) != 1 or isinstance(expr.items[0], (ast.Slice, ast.EllipsisLit)):
            raise ShipeiError(f"{describe(value)} takes one index", expr.loc)
        index = self.eval(expr.items[0], scope)
        if isinstance(value, LayerList):
            if not isinstance(index, int) or isinstance(index, bool) or index not in value.items:
                raise ShipeiError(f"{value.path} has no layer {index}", expr.loc,
                                  hint=f"it holds {', '.join(map(str, sorted(value.items)))}")
            return value.items[index]
        if isinstance(value, (list, tuple)):
            if not isinstance(index, int) or isinstance(index, bool) or not -len(value) <= index < len(value):
                raise ShipeiError(f"index {index!r} is out of range for {describe(value)}", expr.loc)
            return value[index]
        raise ShipeiError(f"{describe(value)} cannot be indexed", expr.loc)

    def eval_subscript(self, item: Any, scope: Scope) -> Any:
        if isinstance(item, ast.EllipsisLit):
            return Ellipsis
        if isinstance(item, ast.Slice):
            parts = [None if p is None else self.eval(p, scope) for p in (item.start, item.stop, item.step)]
            if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
                raise ShipeiError("slice bounds must be compile-time ints", item.loc)
            return slice(*parts)
        return self.eval(item, scope)

    # -- types ----------------------------------------------------------------------------
    def eval_dim_expr(self, expr: Any, scope: Scope, free: dict[str, Sym] | None) -> Dim:
        """A dim from type syntax. Unknown names become symbols when `free` collects them. A chain
        `B + 1 + 1 ...` is evaluated in a loop, so a long one is one level deep."""
        if isinstance(expr, ast.BinOp) and expr.op in DIM_OPS:
            chain = [expr]
            while isinstance(chain[-1].left, ast.BinOp) and chain[-1].left.op in DIM_OPS:
                chain.append(chain[-1].left)
            value = self.eval_dim_expr(chain[-1].left, scope, free)
            for node in reversed(chain):
                try:
                    value = DIM_OPS[node.op](value, self.eval_dim_expr(node.right, scope, free))
                except ShipeiError as e:
                    raise ShipeiError(e.message, node.loc) from None
            return value
        if isinstance(expr, ast.Int):
            return expr.value
        if isinstance(expr, ast.Name):
            try:
                value = scope.lookup(expr.id)
            except KeyError:
                if free is None:
                    raise ShipeiError(f"unknown name '{expr.id}' in a param shape", expr.loc,
                                      hint="param shapes use compile-time values only") from None
                return free.setdefault(expr.id, Sym.named(expr.id))
            if isinstance(value, bool) or not isinstance(value, (int, Sym)):
                raise ShipeiError(f"'{expr.id}' is {describe(value)}, not a dim", expr.loc)
            return value
        raise ShipeiError("a dim is an int, a name or arithmetic of them", expr.loc)

    def tensor_type(self, t: ast.TensorTypeExpr, scope: Scope, free: dict[str, Sym] | None) -> TensorType:
        """The type `t` names; dim names not in `scope` become symbols in `free` (None: an error)."""
        if any(isinstance(d, ast.EllipsisLit) for d in t.dims):
            raise ShipeiError("'...' is only allowed in forward signatures", t.loc)
        dims = tuple(self.eval_dim_expr(d, scope, free) for d in t.dims)
        try:
            return TensorType(DType.parse(t.dtype), dims)
        except ShipeiError as e:  # a negative or huge dim
            raise ShipeiError(e.message, t.loc, e.hint) from None


def tensor_operators(comparison: bool, arity: int = 2) -> dict[str, str]:
    """Operator -> op, as the registry spells ops (`OpDef.dsl`): arithmetic or comparisons."""
    return _operators(comparison, arity, generation())


@functools.cache
def _operators(comparison: bool, arity: int, registry: int) -> dict[str, str]:
    return {opdef.dsl.operator: name for name, opdef in all_ops().items()
            if opdef.dsl and opdef.dsl.operator and len(opdef.operands) == arity
            and ("comparison" in opdef.traits) == comparison}


DIM_OPS = {"+": dim_add, "-": dim_sub, "*": dim_mul, "//": dim_floordiv, "%": dim_mod}


def compile_time_binop(op: str, left: Any, right: Any, loc: SourceLoc) -> Any:
    """Arithmetic on compile-time numbers and dims, with Python's meaning for numbers."""
    numbers = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        raise ShipeiError(f"operator '{op}' does not apply to bools", loc)
    if isinstance(left, Sym) or isinstance(right, Sym):
        if op in DIM_OPS and isinstance(left, (int, Sym)) and isinstance(right, (int, Sym)):
            try:
                return DIM_OPS[op](left, right)
            except ShipeiError as e:
                raise ShipeiError(e.message, loc) from None
        raise ShipeiError(f"operator '{op}' does not apply to {describe(left)} and {describe(right)}", loc)
    if not (isinstance(left, numbers) and isinstance(right, numbers)):
        raise ShipeiError(f"operator '{op}' does not apply to {describe(left)} and {describe(right)}", loc)
    if (op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0
            and right * (abs(left).bit_length() - 1) > limits.INT_BITS):  # decided before Python computes it
        raise ShipeiError(f"{left} ** {right} is past the 64-bit range of compile-time integers", loc)
    try:
        result = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                  "/": lambda: left / right, "//": lambda: left // right, "%": lambda: left % right,
                  "**": lambda: left ** right}[op]()
    except ZeroDivisionError:
        raise ShipeiError("division by zero at compile time", loc) from None
    except OverflowError:
        raise ShipeiError(f"{left!r} {op} {right!r} overflows a float", loc) from None
    except KeyError:
        raise ShipeiError(f"operator '{op}' needs tensors", loc) from None
    return checked_number(result, f"{left!r} {op} {right!r}", loc)


def checked_number(value: Any, what: str, loc: SourceLoc | None) -> Any:
    """A compile-time result as the DSL has them: a real number, an integer within 64 bits."""
    if isinstance(value, complex):
        raise ShipeiError(f"{what} is not a real number", loc)
    if isinstance(value, int) and value.bit_length() > limits.INT_BITS:
        raise ShipeiError(f"{what} is past the 64-bit range of compile-time integers", loc)
    return value


CPARAM_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (float, int), "bool": (bool,)}


def check_cparam(cp: ast.CParam, value: Any, loc: SourceLoc) -> Any:
    """`value` for `cp`, of its type (numpy's scalars as Python's: `hidden=np.int64(8)`)."""
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():  # np.int64(8), np.True_
        value = value.item()
    if cp.type_name not in CPARAM_TYPES:
        raise ShipeiError(f"compile-time parameter '{cp.name}' has unknown type '{cp.type_name}'", cp.loc,
                          hint="compile-time parameters are int, float or bool")
    allowed = CPARAM_TYPES[cp.type_name]
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise ShipeiError(f"'{cp.name}' must be {cp.type_name}, got {describe(value)}", loc)
    return float(value) if cp.type_name == "float" else value


def elaborate(defs: Definitions, model: str | None, params: dict[str, Any],
              bounds: limits.Limits | None = None, method: str = "forward") -> Graph:
    """Build the graph of one model's `method` (forward, or loss: what training makes small, which
    may call forward) from parsed definitions, within `bounds` (the defaults if None)."""
    if method not in ("forward", "loss"):
        raise ShipeiError(f"unknown method {method!r}: a model's graph is of its forward or its loss")
    mdef = defs.pick_model(model)
    with limits.using(bounds or limits.Limits()):
        try:
            return _elaborate_model(defs, mdef, params, method)
        except RecursionError:  # the nesting limit should come first; if not, still no traceback
            raise ShipeiError(f"model {mdef.name} nests too deeply to elaborate", mdef.loc) from None


def _elaborate_model(defs: Definitions, mdef: ast.LayerDef, params: dict[str, Any], which: str) -> Graph:
    graph = Graph(mdef.name, loc=mdef.loc)
    elab = Elaborator(defs, graph)
    unknown = sorted(set(params) - {cp.name for cp in mdef.cparams})
    if unknown:
        raise ShipeiError(f"model {mdef.name} has no parameter '{unknown[0]}'", mdef.loc,
                          hint=did_you_mean(unknown[0], [cp.name for cp in mdef.cparams]))
    inst = elab.instantiate(mdef, [], params, "", mdef.loc, mdef.loc)
    method = inst.loss if which == "loss" else inst.forward
    if method is None:
        raise ShipeiError(f"model {mdef.name} has no loss method, so it cannot be trained", mdef.loc,
                          hint="declare what training makes small: loss(x: ..., y: ...) -> f32[] "
                               "{ return cross_entropy(forward(x), y) }")
    scope = Scope(inst.scope)
    scope.names["forward"] = inst  # loss calls the model's forward as a layer is called
    free: dict[str, Sym] = {}
    for arg in method.args:
        if any(isinstance(d, ast.EllipsisLit) for d in arg.type.dims):
            raise ShipeiError("a model's inputs need full shapes; '...' is for layers", arg.type.loc)
        if any(p.name == arg.name for p in graph.params):
            raise ShipeiError(f"input '{arg.name}' has the name of one of the model's params", arg.loc,
                              hint="inputs and params are named apart, as in a state_dict and a call")
        scope.names[arg.name] = elab.b.input(arg.name, elab.tensor_type(arg.type, inst.scope, free))
    scope.names.update(free)
    try:
        elab.exec_stmts(method.body, scope)
    except _Returned as r:
        result = elab.finish_call(method, r, scope, r.loc, inst)
        graph.outputs = list(result) if isinstance(result, tuple) else [result]
        return graph
    raise ShipeiError(f"{method.name} of model '{mdef.name}' ends without return", method.loc)


def elaborate_source(text: str, file: str = "<string>", model: str | None = None,
                     params: dict[str, Any] | None = None, bounds: limits.Limits | None = None,
                     method: str = "forward") -> Graph:
    return elaborate(Definitions.from_source(text, file), model, params or {}, bounds, method)


def elaborate_file(path: str | Path, model: str | None = None, params: dict[str, Any] | None = None,
                   bounds: limits.Limits | None = None, method: str = "forward") -> Graph:
    return elaborate(Definitions.from_file(Path(path)), model, params or {}, bounds, method)

