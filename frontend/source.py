"""Collecting definitions: the prelude, a source file and the files it imports."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..ir.errors import ShipeiError, SourceLoc, did_you_mean
from . import ast
from .parse import parse_file, parse_source

PRELUDE_FILE = "<prelude>/nn.sp"


@cache
def prelude() -> ast.Module:
    """The layer library written in the DSL, parsed once per process."""
    text = resources.files("shipei.frontend").joinpath("prelude/nn.sp").read_text(encoding="utf-8")
    return parse_source(text, PRELUDE_FILE)


@dataclass
class Definitions:
    """Every layer and model visible to a compilation, by name."""

    layers: dict[str, ast.LayerDef]
    models: dict[str, ast.LayerDef]
    loc: SourceLoc | None = None  # the start of the user's file

    @classmethod
    def from_source(cls, text: str, file: str, base: Path | None = None) -> Definitions:
        return cls._collect(parse_source(text, file), base or Path.cwd())

    @classmethod
    def from_file(cls, path: Path) -> Definitions:
        return cls._collect(parse_file(path), path.parent, {path.resolve()})

    @classmethod
    def _collect(cls, module: ast.Module, base: Path, seen: set[Path] | None = None) -> Definitions:
        defs = cls({}, {}, module.loc)
        defs._add(prelude())
        defs._load(module, base, seen or set())
        return defs

    def _load(self, module: ast.Module, base: Path, seen: set[Path]) -> None:
        for item in module.items:
            if isinstance(item, ast.Import):
                try:
                    path = (base / item.path).resolve()
                    exists = path.is_file()
                except (OSError, ValueError) as e:  # e.g. a NUL byte in the path
                    raise ShipeiError(f"cannot import {item.path!r}: {e}", item.loc) from None
                if path in seen:
                    continue  # already loaded (or a cycle): its definitions are in
                if not exists:
                    raise ShipeiError(f"cannot import '{item.path}': no such file", item.loc)
                seen.add(path)
                self._load(parse_file(path), path.parent, seen)
        self._add(module)

    def _add(self, module: ast.Module) -> None:
        for item in module.items:
            if not isinstance(item, ast.LayerDef):
                continue
            existing = self.layers.get(item.name) or self.models.get(item.name)
            if existing is not None and existing.loc.file != PRELUDE_FILE:
                raise ShipeiError(f"'{item.name}' is defined twice", item.loc,
                                  hint=f"first defined at {existing.loc}")
            (self.models if item.kind == "model" else self.layers)[item.name] = item
            if item.kind == "model":
                # A model can also be used as a layer inside another model.
                self.layers[item.name] = item

    def pick_model(self, name: str | None) -> ast.LayerDef:
        if not self.models:
            raise ShipeiError("no model is defined", self.loc, hint="declare one with `model Name(...) { ... }`")
        if name is None:
            return list(self.models.values())[-1]
        if name not in self.models:
            raise ShipeiError(f"no model named '{name}'",
                              hint=did_you_mean(name, list(self.models), f"models: {', '.join(self.models)}"))
        return self.models[name]
