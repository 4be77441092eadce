"""Fresh identifiers from hints: the one name allocator behind generated DSL and generated Python.

Both must turn user names (`fc1.weight`, `h`) into legal identifiers that collide with nothing
already taken; how each language's reserved words are gathered is the caller's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Namespace:
    """Hands out legal, unique identifiers derived from hints (torch.fx's idea): `fc1.weight` becomes
    `fc1_weight`, a second `h` becomes `h_1`; nothing `reserved` is ever handed out."""

    def __init__(self, reserved: Iterable[str] = ()):
        self._used = set(reserved)

    def reserve(self, name: str) -> None:
        self._used.add(name)

    def taken(self, name: str) -> bool:
        return name in self._used

    def fresh(self, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", hint) or "v"
        if not IDENTIFIER.match(base):
            base = "v_" + base
        name, n = base, 0
        while name in self._used:
            n += 1
            name = f"{base}_{n}"
        self._used.add(name)
        return name
