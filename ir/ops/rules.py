"""Helpers shared by the op definitions: type rules, FLOP rules and batch-mixing rules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShipeiError
from ..types import DType, Sym, TensorType, broadcast_shapes, normalize_axis

if TYPE_CHECKING:
    from ..graph import Builder, Node, Value

FLOATS = frozenset(d for d in DType if d.is_float)
NUMERIC = frozenset(d for d in DType if d is not DType.bool)
ALL = frozenset(DType)
INTS = frozenset((DType.i32, DType.i64))


def check_dtype(t: TensorType, allowed: Iterable[DType], what: str = "operand") -> None:
    allowed = frozenset(allowed)
    if t.dtype not in allowed:
        names = ", ".join(sorted(d.value for d in allowed))
        raise ShipeiError(f"{what} has dtype {t.dtype}, expected one of {names}")


def same_dtype(types: list[TensorType]) -> DType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise ShipeiError("operands have different dtypes: " + ", ".join(str(t) for t in types),
                          hint="insert a cast(x, dtype=...) to make them agree")
    return types[0].dtype


def unary(allowed: frozenset[DType]) -> Callable[[list[TensorType], dict[str, Any]], list[TensorType]]:
    def rule(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_dtype(types[0], allowed)
        return [types[0]]

    return rule


def broadcast(allowed: frozenset[DType], result: DType | None = None):
    """Operands of one dtype broadcast together; result dtype is theirs or `result`."""

    def rule(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        dtype = same_dtype(types)
        check_dtype(types[0], allowed)
        return [TensorType(result or dtype, broadcast_shapes(*(t.shape for t in types)))]

    return rule


def reduce_shape(t: TensorType, axes: tuple[int, ...] | None, keepdims: bool) -> TensorType:
    if axes == ():
        raise ShipeiError("empty axes reduce nothing; use axes=none to reduce every axis")
    axes_set = set(range(t.rank)) if axes is None else {normalize_axis(a, t.rank) for a in axes}
    if axes is not None and len(axes_set) != len(axes):
        raise ShipeiError(f"axes {list(axes)} name the same axis twice")
    shape = [1 if i in axes_set else d for i, d in enumerate(t.shape) if keepdims or i not in axes_set]
    return t.with_shape(shape)


def per_element(flops: float):
    """A FLOP rule of `flops` per element of the first operand."""
    return lambda operands, results, attrs: flops * math.prod(operands[0])


def normalized(axes: Iterable[int] | None, rank: int) -> tuple[int, ...]:
    """Axes in [0, rank); None is every axis."""
    return tuple(range(rank)) if axes is None else tuple(normalize_axis(a, rank) for a in axes)


def batch_axes(value: Value, batch: str) -> tuple[int, ...]:
    """Axes of `value` whose dim is exactly the batch symbol."""
    return tuple(i for i, d in enumerate(value.shape) if isinstance(d, Sym) and str(d) == batch)


def mixes_nothing(node: Node, batch: str) -> list[tuple[int, ...]]:
    """The mix rule of an op that moves or creates elements without combining them."""
    return [() for _ in node.operands]


def mixes_axes_attr(node: Node, batch: str) -> list[tuple[int, ...]]:
    """A reduction over its `axes` attribute (None: all)."""
    return [normalized(node.attrs["axes"], node.operands[0].type.rank)]


def mixes_axis_attr(node: Node, batch: str) -> list[tuple[int, ...]]:
    """An op along its one `axis` attribute (softmax, concat): every operand along it."""
    return [normalized((node.attrs["axis"],), v.type.rank) for v in node.operands]


def scalar(b: Builder, value: float, like: Value) -> Value:
    """A rank-0 constant of `like`'s dtype, for decompositions: broadcasting does the rest."""
    return b("constant", value=np.asarray(value, dtype=like.dtype.numpy), dtype=like.dtype)
