"""Bounds on what elaboration builds, so that a hostile or mistaken program fails with a located
error instead of exhausting memory, time or Python's stack.

`Limits` holds the bounds a user may raise (`shipei check --max-loop N --max-size N`, or
`shipei.parse(..., limits=Limits(...))`); nesting is bounded by Python's own recursion limit, so
it is fixed. The active limits are a context variable: builtins such as `range` read them
without every call site passing them along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ..ir.errors import whole_number

#: How deeply expressions and layer calls may nest. Elaboration recurses about four Python frames
#: per level, and Python stops at 1000; a left-nested chain such as a sum of many terms counts once.
NESTING = 100
#: Compile-time integers are 64-bit, as dims and constants are in every framework.
INT_BITS = 63


@dataclass(frozen=True)
class Limits:
    """`loop`: items one `range()` or `for` may produce. `size`: ops plus params of the elaborated
    graph (a 200-layer GPT is about 10,000; reaching 200,000 takes about 5 s here)."""

    loop: int = 100_000
    size: int = 200_000

    def __post_init__(self) -> None:
        for name in ("loop", "size"):
            whole_number(getattr(self, name), f"Limits' {name}", least=1)


_ACTIVE: ContextVar[Limits | None] = ContextVar("limits", default=None)


def active() -> Limits:
    """The limits of the elaboration in progress (the defaults outside one)."""
    return _ACTIVE.get() or Limits()


@contextmanager
def using(limits: Limits) -> Iterator[None]:
    token = _ACTIVE.set(limits)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
