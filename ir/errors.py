"""The one error type users see, and the source locations it points at.

Every user-facing failure (syntax, unknown name, shape or dtype mismatch, an op a target cannot
lower, a missing framework or device) is a `ShipeiError`. When it has a location, `str(err)`
renders the file:line:col header, the source line and a caret, the way compilers do.
"""

from __future__ import annotations

import difflib
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


class ShipeiError(Exception):
    """A user-facing error: a message, an optional location and an optional hint."""

    def __init__(self, message: str, loc: SourceLoc | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint

    def __str__(self) -> str:
        head = f"{self.loc}: error: {self.message}" if self.loc else f"error: {self.message}"
        parts = [head]
        if self.loc and self.loc.text:
            parts.append("    " + self.loc.text.rstrip("\n"))
            parts.append("    " + " " * (self.loc.col - 1) + "^")
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


def did_you_mean(name: str, candidates: Iterable[str], otherwise: str | None = None) -> str | None:
    """The hint for a misspelt `name`: the closest of `candidates`, else `otherwise`."""
    close = difflib.get_close_matches(name, list(candidates), 1)
    return f"did you mean '{close[0]}'?" if close else otherwise
