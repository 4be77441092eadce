"""The one error type users see, and the source locations it points at.

Every user-facing failure (syntax, unknown name, shape or dtype mismatch, an op a target cannot
lower, a missing framework or device) is a `ShipeiError`. When it has a location, `str(err)`
renders the file:line:col header, the source line and a caret, the way compilers do.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLoc:
    """A position in DSL source: 1-based line and column, plus the line's text for the caret."""

    file: str
    line: int
    col: int
    text: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


Note = tuple[str, "SourceLoc | None"]


class ShipeiError(Exception):
    """A user-facing error: a message, an optional location, an optional hint, and notes that
    point at related places (the prelude line an error inside a library layer came from)."""

    def __init__(self, message: str, loc: SourceLoc | None = None, hint: str | None = None,
                 notes: tuple[Note, ...] = ()):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint
        self.notes = notes

    def __str__(self) -> str:
        parts = [f"{self.loc}: error: {self.message}" if self.loc else f"error: {self.message}", *_caret(self.loc)]
        if self.hint:
            parts.append(f"hint: {self.hint}")
        for text, loc in self.notes:
            parts += [f"{loc}: note: {text}" if loc else f"note: {text}", *_caret(loc)]
        return "\n".join(parts)


def _caret(loc: SourceLoc | None) -> list[str]:
    """The source line and a caret under the column, as compilers show them."""
    if not (loc and loc.text):
        return []
    return ["    " + loc.text.rstrip("\n"), "    " + " " * (loc.col - 1) + "^"]


def did_you_mean(name: str, candidates: Iterable[str], otherwise: str | None = None) -> str | None:
    """The hint for a misspelt `name`: the closest of `candidates`, else `otherwise`."""
    close = difflib.get_close_matches(name, list(candidates), 1)
    return f"did you mean '{close[0]}'?" if close else otherwise


def whole_number(value: object, what: str, least: int = 0) -> int:
    """`value` as an int when it is a whole number >= `least` (numpy's integers too; not a bool,
    a float or a string, which Python would take or truncate without a word); else an error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ShipeiError(f"{what} must be a whole number >= {least}, got {value!r}")
    return int(value)


def real_number(value: object, what: str, low: float, high: float = math.inf, *, open_low: bool = True) -> float:
    """`value` as a float when it is a real number between `low` (excluded where `open_low`) and
    `high` (excluded), numpy's too; not a bool, NaN or a string; else an error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            (low < value if open_low else low <= value) and value < high):
        within = f"{'above' if open_low else 'at least'} {low:g}" + (f" and below {high:g}" if high < math.inf else "")
        raise ShipeiError(f"{what} must be a number {within}, got {value!r}")
    return float(value)
