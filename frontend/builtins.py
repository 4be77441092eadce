"""The DSL's builtin functions: each binds its arguments by a declared signature, then builds ops.

Most builtins are derived from the op registry (`OpDef.dsl`): one op, its operands positional,
its attributes keywords with their defaults, renamed to what PyTorch users write (`sum(x, axis,
keepdim)`). A few give an op DSL conveniences of their own (`reshape` with -1, `split` into equal
sections, pooling's stride defaulting to its kernel, attention's scale to 1/sqrt(depth)) or are
small compositions (`flatten`). Compile-time functions (`range`, `len`, `require`) live here too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir.errors import ShipeiError, SourceLoc, did_you_mean
from ..ir.graph import Builder, Value
from ..ir.registry import OpDef, all_ops, coerce_attr, generation
from ..ir.types import Dim, DType, Sym, dim_floordiv, dim_product, normalize_axis
from . import limits

_REQUIRED = object()


@dataclass(frozen=True)
class Builtin:
    """A function callable from the DSL: its parameter list with defaults, and its body."""

    name: str
    params: tuple[tuple[str, Any], ...]
    body: Callable[..., Any]

    def bind(self, args: list[Any], kwargs: dict[str, Any], loc: SourceLoc | None) -> dict[str, Any]:
        bound = bind_arguments(f"{self.name}()", [n for n, _ in self.params], args, kwargs, loc, "argument")
        for name, default in self.params:
            if name not in bound:
                if default is _REQUIRED:
                    raise ShipeiError(f"{self.name}() is missing argument '{name}'", loc)
                bound[name] = default
        return bound


def bind_arguments(callee: str, names: list[str], args: list[Any], kwargs: dict[str, Any], loc: SourceLoc | None,
                   what: str) -> dict[str, Any]:
    """Python's binding of positional then keyword arguments to `names`, as errors that name the
    `callee` (a builtin's or a layer's) and its parameter list: too many, unknown, given twice."""
    if len(args) > len(names):
        raise ShipeiError(f"{callee} takes {len(names)} arguments, got {len(args)}", loc,
                          hint=f"{callee.removesuffix('()')}({', '.join(names)})")
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise ShipeiError(f"{callee} has no {what} '{key}'", loc,
                              hint=did_you_mean(key, names, f"{callee.removesuffix('()')}({', '.join(names)})"))
        if key in bound:
            raise ShipeiError(f"{callee} got {what} '{key}' twice", loc)
        bound[key] = value
    return bound


class Context:
    """What builtin bodies need from the elaborator: the builder and tensor conversions."""

    def __init__(self, builder: Builder, loc: SourceLoc | None = None):
        self.b = builder
        self.loc = loc

    def error(self, message: str, hint: str | None = None) -> ShipeiError:
        return ShipeiError(message, self.loc, hint)

    def tensor(self, value: Any, like: DType | None = None, what: str = "argument") -> Value:
        """A Value for `value`; Python numbers become constants of dtype `like`."""
        if isinstance(value, Value):
            return value
        if isinstance(value, Sym):
            raise self.error(f"symbolic dim {value} cannot be used as a tensor value",
                             hint="only static dims and compile-time numbers convert to tensors")
        if isinstance(value, (bool, int, float)):
            dtype = like or (DType.bool if isinstance(value, bool) else DType.i64 if isinstance(value, int)
                             else DType.f32)
            if isinstance(value, float) and not dtype.is_float:
                raise self.error(f"float {value!r} cannot be combined with a {dtype} tensor",
                                 hint="cast the tensor first: cast(x, f32)")
            return self.b("constant", value=self._in_range(value, dtype), dtype=dtype)
        raise self.error(f"{what} must be a tensor, got {describe(value)}")

    def _in_range(self, value: bool | int | float, dtype: DType) -> np.ndarray:
        """`value` as a `dtype` scalar, or an error where it does not fit (an integer out of range, a
        finite float that would become infinite) rather than a silently different number."""
        try:
            with np.errstate(over="ignore"):
                array = np.asarray(value, dtype=dtype.numpy)
        except OverflowError:
            array = None
        if array is None or (dtype.is_float and math.isfinite(value) and not np.isfinite(array.astype(np.float64))):
            raise self.error(f"the number {value!r} is out of range for {dtype}",
                             hint="use a smaller number, or cast the tensor to a wider dtype first")
        return array

    def tensors(self, *values: Any) -> list[Value]:
        """Convert scalars to the dtype of the first tensor among `values`."""
        like = next((v.dtype for v in values if isinstance(v, Value)), None)
        return [self.tensor(v, like) for v in values]

    def ints(self, value: Any, what: str) -> tuple[int, ...]:
        items = value if isinstance(value, (list, tuple)) else (value,)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            raise self.error(f"{what} must be an int or a list of ints, got {describe(value)}")
        return tuple(items)

    def dims(self, value: Any, what: str) -> tuple[Dim, ...]:
        items = value if isinstance(value, (list, tuple)) else (value,)
        if not all(isinstance(i, (int, Sym)) and not isinstance(i, bool) for i in items):
            raise self.error(f"{what} must be a list of dims, got {describe(value)}")
        return tuple(items)

    def op(self, name: str, *operands: Value, **attrs: Any) -> Value:
        (result,) = self.ops(name, *operands, **attrs)
        return result

    def ops(self, name: str, *operands: Value, **attrs: Any) -> list[Value]:
        """Build a node; type errors point at this expression rather than its statement."""
        try:
            return self.b.op(name, *operands, **attrs)
        except ShipeiError as e:
            raise ShipeiError(e.message, self.loc or e.loc, e.hint) from None


def describe(value: Any) -> str:
    """A user-facing name for a compile-time value's kind."""
    if isinstance(value, Value):
        return f"a tensor {value.type}"
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, Sym):
        return f"the dim {value}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return getattr(value, "describe", lambda: type(value).__name__)()


#: Builtins that are not an op's derived spelling: compositions, compile-time functions, and ops
#: with conveniences of their own. They take precedence over the derived ones (`builtins()`).
SPECIAL: dict[str, Builtin] = {}


def builtin(name: str, *params: str, **defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a builtin: positional names first (required), then keyword names with defaults."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        SPECIAL[name] = Builtin(name, tuple((p, _REQUIRED) for p in params) + tuple(defaults.items()), fn)
        return fn

    return register


def builtins() -> dict[str, Builtin]:
    """Every builtin: one per op the DSL writes as a call (from the registry, so an op registered
    at any time has one), then the special ones."""
    return _builtins(generation())


@functools.cache
def _builtins(registry: int) -> dict[str, Builtin]:
    derived = {opdef.function: op_builtin(opdef) for opdef in all_ops().values() if opdef.function}
    return derived | SPECIAL


def op_builtin(opdef: OpDef) -> Builtin:
    """`opdef` as a builtin: its operands positional (a variadic one a list when it is the only
    one, else optional), then its attributes as keywords named as `opdef.dsl` spells them."""
    name, spelling = opdef.function, opdef.dsl
    operands = [(o.lstrip("*"), None if o.startswith("*") and len(opdef.operands) > 1 else _REQUIRED)
                for o in opdef.operands]
    attrs = {spelling.keyword(a): a for a in opdef.attrs}
    params = tuple(operands) + tuple((k, opdef.attrs[a].default if not opdef.attrs[a].required else _REQUIRED)
                                     for k, a in attrs.items())

    def body(c: Context, **bound: Any) -> Any:
        values: list[Any] = []
        for (o, _), spec in zip(operands, opdef.operands, strict=True):
            given = bound[o]
            if spec.startswith("*"):
                if len(operands) == 1 and (not isinstance(given, (list, tuple)) or not given):
                    raise c.error(f"{name}() takes a list of tensors as '{o}', got {describe(given)}")
                values += [] if given is None else given if isinstance(given, (list, tuple)) else [given]
            else:
                values.append(given)
        settings = {}
        for keyword_name, attr in attrs.items():
            value = bound[keyword_name]
            if isinstance(value, Value):
                raise c.error(f"{name}() argument '{keyword_name}' must be known at compile time, "
                              f"got {describe(value)}")
            settings[attr] = coerce_attr(f"{name}()", keyword_name, opdef.attrs[attr].kind, value, c.loc)
        results = c.ops(opdef.name, *c.tensors(*values), **settings)
        return results[0] if len(results) == 1 else tuple(results)

    return Builtin(name, params, body)


@builtin("where", "cond", "x", "y")
def _where(c: Context, cond, x, y):
    x, y = c.tensors(x, y)
    return c.op("where", c.tensor(cond, DType.bool), x, y)


@builtin("cast", "x", "dtype")
def _cast(c: Context, x, dtype):
    if not isinstance(dtype, DType):
        raise c.error(f"cast() needs a dtype such as f32, got {describe(dtype)}")
    return c.op("cast", c.tensor(x), dtype=dtype)


@builtin("attention", "q", "k", "v", scale=None, causal=False)
def _attention(c: Context, q, k, v, scale, causal):
    q, k, v = c.tensors(q, k, v)
    if scale is None:
        depth = q.shape[-1] if q.type.rank else None
        if not isinstance(depth, int):
            raise c.error(f"attention() needs scale= when the depth of q {q.type} is not a number")
        scale = 1.0 / depth ** 0.5
    return c.op("attention", q, k, v, scale=scale, causal=causal)


def _pool(op: str, **extra: Any) -> Callable[..., Value]:
    def body(c: Context, x, kernel, stride, padding, **kw):
        kernel = c.ints(kernel, "kernel")
        return c.op(op, c.tensor(x), kernel=kernel, stride=kernel if stride is None else c.ints(stride, "stride"),
                    padding=c.ints(padding, "padding"), **kw)

    return builtin(op, "x", "kernel", stride=None, padding=0, **extra)(body)


_pool("max_pool2d")
_pool("avg_pool2d", count_include_pad=True)


def resolve_shape(c: Context, x: Value, shape: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """Replace one -1 by the dim that keeps the element count."""
    holes = [i for i, d in enumerate(shape) if d == -1]
    if not holes:
        return shape
    if len(holes) > 1:
        raise c.error("reshape can infer only one -1 dim")
    known = dim_product([d for d in shape if d != -1])
    try:
        inferred = dim_floordiv(dim_product(x.shape), known)
    except ShipeiError:
        raise c.error(f"cannot reshape {x.type} to [{', '.join(map(str, shape))}]") from None
    return tuple(inferred if d == -1 else d for d in shape)


@builtin("reshape", "x", "shape")
def _reshape(c: Context, x, shape):
    x = c.tensor(x)
    return c.op("reshape", x, shape=resolve_shape(c, x, c.dims(shape, "shape")))


@builtin("flatten", "x", start_dim=1)
def _flatten(c: Context, x, start_dim):
    x = c.tensor(x)
    start = normalize_axis(start_dim, x.type.rank)
    return c.op("reshape", x, shape=x.shape[:start] + (dim_product(x.shape[start:]),))


@builtin("transpose", "x", perm=None)
def _transpose(c: Context, x, perm):
    x = c.tensor(x)
    perm = tuple(reversed(range(x.type.rank))) if perm is None else c.ints(perm, "perm")
    return c.op("transpose", x, perm=perm)


@builtin("split", "x", "sections", axis=0)
def _split(c: Context, x, sections, axis):
    """`split(x, 3)` cuts into 3 equal parts; `split(x, [2, 5])` into parts of those sizes."""
    x = c.tensor(x)
    dim = x.shape[normalize_axis(axis, x.type.rank)]
    if isinstance(sections, int) and not isinstance(sections, bool):
        if not isinstance(dim, int) or sections <= 0 or dim % sections:
            raise c.error(f"cannot split dim {dim} of {x.type} into {sections} equal parts")
        sizes = (dim // sections,) * sections
    else:
        sizes = c.ints(sections, "sections")
    return tuple(c.ops("split", x, sizes=sizes, axis=axis))


@builtin("gather", "x", "indices", axis=0)
def _gather(c: Context, x, indices, axis):
    return c.op("gather", c.tensor(x), c.tensor(indices, DType.i64), axis=axis)


@builtin("arange", "n", dtype=DType.i64)
def _arange(c: Context, n, dtype):
    return c.op("iota", length=n, dtype=dtype)


@builtin("range", "start", stop=None, step=1)
def _range(c: Context, start, stop, step):
    args = (0, start) if stop is None else (start, stop)
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in (*args, step)):
        raise c.error("range() needs compile-time ints")
    if step == 0:
        raise c.error("range() step must not be zero")
    items = range(*args, step)
    budget = limits.active().loop
    if len(items) > budget:  # before a list of them exists
        raise c.error(f"range() of {len(items):,} items is past the limit of {budget:,} loop iterations",
                      hint="raise it with --max-loop (shipei.parse(..., limits=Limits(loop=...)))")
    return list(items)


@builtin("len", "x")
def _len(c: Context, x):
    if isinstance(x, (list, tuple)):
        return len(x)
    raise c.error(f"len() takes a list or tuple, got {describe(x)}")


@builtin("require", "cond", "message")
def _require(c: Context, cond, message):
    if not isinstance(cond, bool):
        raise c.error(f"require() needs a compile-time condition, got {describe(cond)}")
    if not cond:
        raise c.error(f"requirement failed: {message}")
    return None


#: Tensor attributes and methods: `x.T`, `x.shape`, and every builtin whose first argument is x.
def tensor_attribute(c: Context, x: Value, name: str) -> Any:
    if name == "shape":
        return x.shape
    if name == "dtype":
        return x.dtype
    if name == "T":
        if x.type.rank < 2:
            raise c.error(f".T needs a tensor of rank >= 2, got {x.type}")
        perm = list(range(x.type.rank))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        return c.op("transpose", x, perm=tuple(perm))
    functions = builtins()
    if name in functions:
        return BoundMethod(functions[name], x)
    raise c.error(f"a tensor has no attribute '{name}'", hint=did_you_mean(name, ["shape", "dtype", "T", *functions]))


@dataclass(frozen=True)
class BoundMethod:
    """`x.reshape` waiting for its remaining arguments."""

    fn: Builtin
    self_value: Value

    def describe(self) -> str:
        return f"the method {self.fn.name}"


@builtin("constant", "value", "dtype")
def _constant(c: Context, value, dtype):
    """An array literal of one dtype: `constant([[1.0, -2.5], [0.0, inf]], f32)`, numpy's conversion."""
    if not isinstance(dtype, DType):
        raise c.error(f"constant() needs a dtype such as f32, got {describe(dtype)}")

    def check(v: Any) -> None:
        if isinstance(v, (list, tuple)):
            for item in v:
                check(item)
        elif not isinstance(v, (bool, int, float)):
            raise c.error(f"constant() takes numbers or nested lists of them, got {describe(v)}")

    check(value)
    try:
        array = np.asarray(value, dtype=np.float64 if dtype.is_float else None)
    except ValueError:
        raise c.error("constant() needs a rectangular nested list (every row the same length)") from None
    if not dtype.is_float and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise c.error(f"inf and nan have no {dtype} value")
    return c.op("constant", value=array.astype(dtype.numpy), dtype=dtype)
