"""Tensor indexing `x[...]` lowered to slice, reshape and gather, with numpy's meaning."""

from __future__ import annotations

from typing import Any

from ..ir.graph import Value
from .builtins import Context, describe

_FULL = slice(None)


def index_tensor(c: Context, x: Value, items: list[Any]) -> Value:
    """`x[1, 2:5, ::2, ..., idx]`: ints drop their axis, slices keep it, one int tensor gathers."""
    rank = x.type.rank
    if items.count(Ellipsis) > 1:
        raise c.error("an index can have only one '...'")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = items[:at] + [_FULL] * (rank - len(items) + 1) + items[at + 1:]
    if len(items) > rank:
        raise c.error(f"too many indices ({len(items)}) for {x.type}")
    items = items + [_FULL] * (rank - len(items))
    tensors = [i for i, item in enumerate(items) if isinstance(item, Value)]
    if len(tensors) > 1:
        raise c.error("only one tensor index is supported; gather() the others separately")
    axes, starts, stops, steps, dropped = [], [], [], [], []
    for axis, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, (int, slice, Value)):
            raise c.error(f"cannot index with {describe(item)}")
        if isinstance(item, Value) or item == _FULL:
            continue
        dim = x.shape[axis]
        if not isinstance(dim, int):
            raise c.error(f"cannot index symbolic dim {dim} of {x.type} at compile time")
        if isinstance(item, int):
            if not -dim <= item < dim:
                raise c.error(f"index {item} is out of range for dim {axis} of {x.type}")
            item = slice(item % dim, item % dim + 1)
            dropped.append(axis)
        start, stop, step = item.indices(dim)
        axes.append(axis)
        starts.append(start)
        stops.append(stop if stop >= 0 else -dim - 1)
        steps.append(step)
    out = x
    if axes:
        out = c.op("slice", out, axes=tuple(axes), starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    if dropped:
        out = c.op("reshape", out, shape=tuple(d for i, d in enumerate(out.shape) if i not in dropped))
    if tensors:
        axis = tensors[0] - sum(1 for d in dropped if d < tensors[0])
        out = c.op("gather", out, items[tensors[0]], axis=axis)
    return out
