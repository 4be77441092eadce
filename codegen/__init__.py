"""Code generation: one standalone Python module per target, from a shared module writer.

Targets are loaded lazily by name, so generating torch code never imports jax.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from functools import cache
from typing import Any

from ..ir.errors import ShipeiError, did_you_mean
from ..ir.graph import Graph, Node
from ..ir.passes.context import TargetInfo
from ..ir.passes.decompose import decompose, needs_decomposing
from ..ir.passes.rewrite import clone
from ..ir.registry import all_ops, generation
from ..ir.samples import build, samples
from ..ir.types import DType
from .module import GeneratedModule
from .prepare import prepare
from .writer import Target

TARGETS = ("torch", "jax", "tf", "mindspore")
#: Targets registered besides the built-in ones (`register_target`): name -> module.
_REGISTERED: dict[str, str] = {}


def register_target(name: str, module: str) -> None:
    """Add a target: `module` defines `TARGET` (a `Target`) and `emit(graph, source, **options)`.
    It is not part of "all"; the built-in targets cannot be replaced."""
    if name in TARGETS:
        raise ShipeiError(f"target '{name}' is built in")
    _REGISTERED[name] = module


def _module(name: str) -> Any:
    if name in TARGETS:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _REGISTERED:
        return importlib.import_module(_REGISTERED[name])
    raise ShipeiError(f"unknown target '{name}'", hint=f"targets are {', '.join(TARGETS)}")


def get_target(name: str) -> Target:
    return _module(name).TARGET


def target_info(name: str) -> TargetInfo:
    """What the passes may know of target `name` (`PassContext.target`)."""
    spec = get_target(name)
    return TargetInfo(name, spec.layout, spec.int8_matmul, native(spec))


def native(target: Target):
    """Whether `target` lowers a node itself, at every dtype it reads and makes."""
    return lambda node: all(target.supports(node.op, v.dtype) for v in (*node.operands, *node.results))


def emit(graph: Graph, target: str, source: str = "<graph>", *, planned: bool = False,
         prepare_weights: bool = True, **options: Any) -> GeneratedModule:
    """Generate `target`'s program for `graph`; `source` names the DSL file in comments and
    `options` are the target's own (e.g. jax's `compute_dtype`, torch's `amp`). `planned` says
    the pipeline planned memory (-O3): an eager target then reuses dying buffers and keeps
    buffers between calls unless told not to (see `codegen.buffers`). `prepare_weights` computes
    what the weights alone determine when they are bound (see `codegen.prepare`): not for a
    program that trains, whose gradients are by the user's params."""
    module = _module(target)
    spec, write = module.TARGET, module.emit
    _check_options(target, options, write)
    if spec.inplace and planned:
        options.setdefault("reuse_buffers", True)
    if spec.into and planned:
        options.setdefault("keep_buffers", True)
    if needs_decomposing(graph, native(spec)):  # composites the target has no kernel for
        keep = _keeps(target, spec)
        graph = clone(graph)
        decompose(graph, keep)
    return write(prepare(graph) if prepare_weights else graph, source, **options)


def _keeps(target: str, spec: Target) -> Callable[[Node], bool]:
    """Which composite nodes emission keeps whole: those the target lowers itself, and those it
    cannot run even decomposed (its error then names the op the user wrote, not a primitive)."""
    table = capabilities(target)
    lowers = native(spec)
    return lambda node: lowers(node) or not all(v.dtype in table.get(node.op, ()) for v in (*node.operands,
                                                                                             *node.results))


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
    """The op x dtype table a target lowers, itself or through decompositions; the partitioner and
    tests read this."""
    return dict(_capabilities(target, generation()))


@cache
def _capabilities(target: str, registry: int) -> dict[str, frozenset[DType]]:
    t = get_target(target)
    table = {op: frozenset(d for d in DType if t.supports(op, d)) for op in t.rules}
    for op, opdef in all_ops().items():
        if opdef.composite:
            table[op] = table.get(op, frozenset()).union(*(_decomposes(t, op, d) for d in DType))
    return {op: dtypes for op, dtypes in table.items() if dtypes}


def _decomposes(t: Target, op: str, dtype: DType) -> frozenset[DType]:
    """The dtypes `op` reads and makes at `dtype` (its labels' i64 too) where every sample of it,
    decomposed to primitives, is lowered by `t`; else none."""
    graphs = []
    for sample in samples(op):
        try:
            graphs.append(build(op, sample, dtype))
        except ShipeiError:
            return frozenset()
    used = frozenset(v.dtype for graph in graphs for v in (*graph.inputs, *graph.outputs))
    for graph in graphs:
        decompose(graph)
    return used if graphs and all(native(t)(node) for graph in graphs for node in graph.nodes) else frozenset()


__all__ = ["TARGETS", "GeneratedModule", "capabilities", "emit", "get_target", "native", "register_target",
           "target_info"]
