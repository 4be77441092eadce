"""Helpers every pass test uses: run a pass on IR text, and check that a pass keeps meaning.

`after(text, pass)` is the golden-test form (IR text in, IR text out). `assert_preserves` is the
property: the reference interpreter gives the same outputs before and after (within the dtype's
tolerance at declared or f64 precision, as `assert_lowering_correct` judges targets), and the
result verifies. Graphs come from `shipei.testing.graphs()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import reject
from shipei.ir.graph import Graph
from shipei.ir.init import init_params
from shipei.ir.interpreter import interpret
from shipei.ir.parser import parse_ir
from shipei.ir.passes.context import PassSettings, TargetInfo
from shipei.ir.passes.manager import PassContext, run_passes
from shipei.ir.passes.rewrite import clone
from shipei.ir.printer import print_graph
from shipei.ir.tolerance import compare
from shipei.ir.verifier import verify

from shipei.testing import make_inputs

Weights = dict[str, np.ndarray]


def after(text: str, *passes: str, weights: Weights | None = None, frozen: bool = False,
          target: TargetInfo | None = None, **options: Any) -> str:
    """The printed IR after running `passes` on the parsed `text`, for `target` (none if not given)."""
    ctx = PassContext(weights=weights, frozen=frozen, settings=PassSettings.parse(options), target=target)
    return print_graph(run_passes(parse_ir(text), passes, ctx))


def idempotent(text: str, *passes: str, **options: Any) -> bool:
    once = after(text, *passes, **options)
    return after(once, *passes, **options) == once


def run(graph: Graph, passes: Sequence[str], weights: Weights | None = None, frozen: bool = True,
        **options: Any) -> tuple[Graph, PassContext]:
    """`passes` on a copy of `graph` with (a copy of) its weights; verification after each pass."""
    ctx = PassContext(weights=dict(weights if weights is not None else init_params(graph)), frozen=frozen,
                      verify=True, settings=PassSettings.parse(options))
    out = run_passes(clone(graph), passes, ctx)
    verify(out)
    return out, ctx


def assert_same_outputs(before: Graph, before_weights: Weights, after_graph: Graph, after_weights: Weights,
                        inputs: Sequence[np.ndarray]) -> None:
    """The reference says the same before and after, at declared or at f64 precision."""
    assert [v.type for v in before.outputs] == [v.type for v in after_graph.outputs]
    for precision in ("declared", "f64"):
        want = interpret(before, inputs, before_weights, precision)
        got = interpret(after_graph, inputs, after_weights, precision)
        worst = [compare(g, w, v.dtype) for g, w, v in zip(got, want, before.outputs)]
        if all(m.ok for m in worst):
            return
    raise AssertionError(f"outputs differ after the passes: {[m for m in worst if not m.ok]}\n"
                         f"before:\n{print_graph(before)}after:\n{print_graph(after_graph)}")


def assert_preserves(graph: Graph, passes: Sequence[str], seed: int = 0, **options: Any) -> Graph:
    """Run `passes` (frozen weights) and check the outputs against the original graph's.

    A graph the reference cannot run before any pass (a reference bug, not a pass's) is skipped."""
    weights = init_params(graph)
    inputs = make_inputs(graph, seed)
    try:
        interpret(graph, inputs, weights)
    except Exception:  # noqa: BLE001 - whatever the reason, it is not the pass under test
        reject()
    out, ctx = run(graph, passes, weights, **options)
    assert_same_outputs(graph, weights, out, ctx.weights, list(inputs))
    return out
