"""Code generation: one standalone Python module per target, from a shared module writer.

Targets are loaded lazily by name, so generating torch code never imports jax.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..ir.errors import ShipeiError, did_you_mean
from ..ir.graph import Graph
from ..ir.types import DType
from .module import GeneratedModule
from .writer import Target

TARGETS = ("torch", "jax", "tf", "mindspore")


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ShipeiError(f"unknown target '{name}'", hint=f"targets are {', '.join(TARGETS)}")
    return importlib.import_module(f"{__name__}.{name}").TARGET


def emit(graph: Graph, target: str, source: str = "<graph>", *, planned: bool = False,
         **options: Any) -> GeneratedModule:
    """Generate `target`'s program for `graph`; `source` names the DSL file in comments and
    `options` are the target's own (e.g. jax's `compute_dtype`, torch's `amp`). `planned` says
    the pipeline planned memory (-O3): an eager target then reuses dying buffers and keeps
    buffers between calls unless told not to (see `codegen.buffers`)."""
    spec = get_target(target)
    write = importlib.import_module(f"{__name__}.{target}").emit
    _check_options(target, options, write)
    if spec.inplace and planned:
        options.setdefault("reuse_buffers", True)
    if spec.into and planned:
        options.setdefault("keep_buffers", True)
    return write(graph, source, **options)


def _check_options(target: str, options: dict[str, Any], write: Any) -> None:
    """An option the target's `emit` does not take is a typo: name it, and what the target takes."""
    known = [n for n, p in inspect.signature(write).parameters.items() if p.kind is p.KEYWORD_ONLY]
    for name in options:
        if name not in known:
            takes = f"{target} takes {', '.join(known)}" if known else f"{target} takes no options"
            close = did_you_mean(name, known)
            raise ShipeiError(f"unknown option '{name}' for target '{target}'",
                              hint=f"{close} {takes}" if close else takes)


def capabilities(target: str) -> dict[str, frozenset[DType]]:
    """The op x dtype table a target lowers; the partitioner and tests read this."""
    t = get_target(target)
    return {op: frozenset(d for d in DType if t.supports(op, d)) for op in t.rules}


__all__ = ["TARGETS", "GeneratedModule", "capabilities", "emit", "get_target"]
