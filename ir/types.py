"""Tensor types of the IR: dtypes, symbolic dims and `TensorType`.

A dim is either a plain `int` or a `Sym`, a polynomial over named symbols with integer
coefficients kept in canonical form, so `B*T` and `T*B` are the same dim and `(n+1)-1` folds to
`n`. That is all the arithmetic shape rules need (products for reshape, sums for concat and pad)
and it keeps equality exact without a computer-algebra system.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import ShipeiError


class DType(enum.Enum):
    """Element types, named as the DSL spells them."""

    f16 = "f16"
    bf16 = "bf16"
    f32 = "f32"
    f64 = "f64"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        return self in (DType.i32, DType.i64)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype holding values of this type (bf16 via ml_dtypes)."""
        if self is DType.bf16:
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(_NUMPY_NAMES[self])

    @staticmethod
    def parse(name: str) -> DType:
        try:
            return DType(name)
        except ValueError:
            names = ", ".join(d.value for d in DType)
            raise ShipeiError(f"unknown dtype '{name}'", hint=f"dtypes are {names}") from None

    @staticmethod
    def of_numpy(dtype: np.dtype) -> DType:
        dtype = np.dtype(dtype)
        if dtype.name == "bfloat16":
            return DType.bf16
        for d, name in _NUMPY_NAMES.items():
            if dtype == np.dtype(name):
                return d
        raise ShipeiError(f"numpy dtype {dtype} has no shipei equivalent")

    def __str__(self) -> str:
        return self.value


_FLOATS = (DType.f16, DType.bf16, DType.f32, DType.f64)
#: The 16-bit floats, which frameworks compute in float32 and round (or should).
LOW_PRECISION = frozenset({DType.f16, DType.bf16})
_ITEMSIZE = {DType.f16: 2, DType.bf16: 2, DType.f32: 4, DType.f64: 8, DType.i32: 4, DType.i64: 8, DType.bool: 1}
_NUMPY_NAMES = {DType.f16: "float16", DType.f32: "float32", DType.f64: "float64",
                DType.i32: "int32", DType.i64: "int64", DType.bool: "bool"}


Monomial = tuple[str, ...]  # sorted symbol names, with repetition for powers


@dataclass(frozen=True)
class Sym:
    """A symbolic dim: sum of coefficient * monomial, canonical (sorted, no zero terms)."""

    terms: tuple[tuple[Monomial, int], ...]

    @staticmethod
    def named(name: str) -> Sym:
        return Sym((((name,), 1),))

    @cached_property
    def symbols(self) -> frozenset[str]:
        return frozenset(s for mono, _ in self.terms for s in mono)

    def __str__(self) -> str:
        out = ""
        # The constant term goes last, the way people write dims: "B*T + 1", "-B + 4".
        for mono, coeff in sorted(self.terms, key=lambda t: not t[0]):
            body = "*".join(mono)
            if not mono:
                body = str(abs(coeff))
            elif abs(coeff) != 1:
                body = f"{abs(coeff)}*{body}"
            sign = "-" if coeff < 0 else "+"
            out = (f"-{body}" if sign == "-" else body) if not out else f"{out} {sign} {body}"
        return out

    def __repr__(self) -> str:
        return f"Sym({self})"


Dim = int | Sym
#: The largest static dim: int32 indexing, which some frameworks' kernels use, reaches it.
MAX_DIM = 2**31 - 1


def _terms(d: Dim) -> dict[Monomial, int]:
    if isinstance(d, Sym):
        return dict(d.terms)
    return {(): d} if d else {}


#: The largest degree of a symbolic dim's monomial (B*T*T is 3) and the largest coefficient: real
#: shapes stay far below both, and unbounded ones grow without limit (a dim squared in a loop).
MAX_DEGREE = 32
MAX_COEFFICIENT = 2**63 - 1


def _make(terms: dict[Monomial, int]) -> Dim:
    for m, c in terms.items():
        if len(m) > MAX_DEGREE or abs(c) > MAX_COEFFICIENT:
            raise ShipeiError("symbolic dim too large", hint=f"a dim's terms have degree at most {MAX_DEGREE} "
                                                              "and 64-bit coefficients")
    items = tuple(sorted((m, c) for m, c in terms.items() if c))
    if not items:
        return 0
    if len(items) == 1 and items[0][0] == ():
        return items[0][1]
    return Sym(items)


def dim_add(a: Dim, b: Dim) -> Dim:
    out = _terms(a)
    for m, c in _terms(b).items():
        out[m] = out.get(m, 0) + c
    return _make(out)


def dim_neg(a: Dim) -> Dim:
    return _make({m: -c for m, c in _terms(a).items()})


def dim_sub(a: Dim, b: Dim) -> Dim:
    return dim_add(a, dim_neg(b))


def dim_mul(a: Dim, b: Dim) -> Dim:
    out: dict[Monomial, int] = {}
    for ma, ca in _terms(a).items():
        for mb, cb in _terms(b).items():
            if len(ma) + len(mb) > MAX_DEGREE:
                return _make({ma + mb: 1})  # refused there, before the product is built
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0) + ca * cb
    return _make(out)


def dim_floordiv(a: Dim, b: Dim) -> Dim:
    """Exact division of a dim; a symbolic remainder is an error rather than a guess."""
    if isinstance(a, int) and isinstance(b, int):
        if b == 0:
            raise ShipeiError("division of a dim by zero")
        return a // b
    if isinstance(b, int) and b != 0 and all(c % b == 0 for c in _terms(a).values()):
        return _make({m: c // b for m, c in _terms(a).items()})
    if isinstance(b, Sym) and len(b.terms) == 1 and b.terms[0][1] == 1:
        (sym_mono, _), = b.terms
        out: dict[Monomial, int] = {}
        for m, c in _terms(a).items():
            rest = list(m)
            for s in sym_mono:
                if s not in rest:
                    break
                rest.remove(s)
            else:
                out[tuple(rest)] = c
                continue
            break
        else:
            return _make(out)
    raise ShipeiError(f"cannot divide dim '{format_dim(a)}' exactly by '{format_dim(b)}'")


def dim_mod(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int) and b != 0:
        return a % b
    raise ShipeiError(f"cannot take '{format_dim(a)}' modulo '{format_dim(b)}' at compile time")


def dim_product(dims: tuple[Dim, ...] | list[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def format_dim(d: Dim) -> str:
    return str(d)


def dim_symbols(d: Dim) -> frozenset[str]:
    return d.symbols if isinstance(d, Sym) else frozenset()


def eval_dim(d: Dim, env: Mapping[str, int]) -> int:
    """The concrete value of a dim once its symbols are bound."""
    if isinstance(d, int):
        return d
    total = 0
    for mono, coeff in d.terms:
        v = coeff
        for s in mono:
            v *= env[s]
        total += v
    return total


#: Value a shape symbol takes in cost estimates and profiles when the caller gives none.
DEFAULT_DIM = 8


def concrete_shape(shape: tuple[Dim, ...], dims: Mapping[str, int]) -> tuple[int, ...]:
    """`shape` at `dims`; a symbol they do not give is `DEFAULT_DIM`."""
    missing = {s for d in shape if not isinstance(d, int) for s in d.symbols} - set(dims)
    env = {**dims, **dict.fromkeys(missing, DEFAULT_DIM)} if missing else dims
    return tuple(eval_dim(d, env) for d in shape)


@dataclass(frozen=True)
class TensorType:
    """Element type and shape of an IR value. `f32[]` is a scalar; a static dim is in [0, MAX_DIM]."""

    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        for d in self.shape:
            if isinstance(d, int) and not 0 <= d <= MAX_DIM:
                raise ShipeiError(f"dim {d} of {self} is {'negative' if d < 0 else 'too large'}",
                                  hint=f"a dim is between 0 and {MAX_DIM:,} (2**31 - 1)")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def with_shape(self, shape: tuple[Dim, ...] | list[Dim]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(format_dim(d) for d in self.shape)}]"


def normalize_axis(axis: int, rank: int) -> int:
    """Python-style negative axes, checked against the rank."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ShipeiError(f"an axis must be an int, got {axis!r}")
    if not -rank <= axis < max(rank, 1):
        raise ShipeiError(f"axis {axis} is out of range for a rank-{rank} tensor")
    return axis % rank if rank else 0


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """numpy broadcasting over symbolic dims: equal dims or 1 stretch; anything else errors."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dim: Dim = 1
        for s in shapes:
            d = s[i - rank + len(s)] if i - rank + len(s) >= 0 else 1
            if d == 1 or d == dim:
                continue
            if dim != 1:
                raise ShipeiError(
                    "shapes " + " and ".join(f"[{', '.join(map(str, s))}]" for s in shapes)
                    + f" do not broadcast: dim {i} is {format_dim(dim)} vs {format_dim(d)}")
            dim = d
        out.append(dim)
    return tuple(out)
