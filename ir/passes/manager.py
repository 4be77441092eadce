"""The pass manager: named passes, explicit pipelines, verification, timing and IR dumps.

Passes are registered lazily by CLI name (`fold-constants` -> `FoldConstants` in
`fold_constants.py`) and run in a `PassContext` (`context.py`), TVM-style: the context carries the
typed settings, the target, what to print or time, and the weights for passes that rewrite them
(folding BatchNorm, quantization, pruning), which apply only when weights are frozen.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ..errors import ShipeiError, did_you_mean
from ..graph import Graph
from .context import PassContext, PassTiming

#: CLI name -> (module in ir/passes, class name).
PASSES: dict[str, tuple[str, str]] = {
    "canonicalize": ("canonicalize", "Canonicalize"),
    "fold-constants": ("fold_constants", "FoldConstants"),
    "dce": ("dce", "DCE"),
    "cse": ("cse", "CSE"),
    "simplify": ("simplify", "Simplify"),
    "fold-batch-norm": ("fold_batch_norm", "FoldBatchNorm"),
    "recognize": ("recognize", "Recognize"),
    "freeze": ("freeze", "Freeze"),
    "layout": ("layout", "Layout"),
    "fuse": ("fuse", "Fuse"),
    "decompose": ("decompose", "Decompose"),
    "plan-memory": ("plan_memory", "PlanMemory"),
    "quantize": ("quantize", "Quantize"),
    "prune": ("prune", "Prune"),
    "partition": ("partition", "Partition"),
}

_O1 = ["canonicalize", "fold-constants", "dce"]
# fold-batch-norm folds frozen weights, else writes the fold for the program to compute at load;
# freeze does nothing unless the weights are frozen. recognize runs after fold-batch-norm, which
# folds into matmul + add, and before freeze.
_O2 = ["canonicalize", "fold-constants", "simplify", "cse", "fold-batch-norm", "recognize", "freeze", "dce"]
# layout does nothing for a target that prefers the IR's own layout (see layout.py); it runs
# before freeze, which folds the transposes of weights it introduces.
_O3 = ["canonicalize", "fold-constants", "simplify", "cse", "fold-batch-norm", "recognize", "layout", "freeze", "dce",
       "fuse", "plan-memory"]

#: The -O levels, as explicit ordered lists. Compression (quantize, prune) changes results, so
#: no level runs it: ask for it by name.
PIPELINES: dict[int, list[str]] = {0: [], 1: _O1, 2: _O2, 3: _O3}

#: The level `shipei.compile` and the CLI use unless told: TVM's and ONNX Runtime's default too.
#: -O2 keeps the program's structure (no fusion groups, no layout change) and every pass in it
#: preserves results within the dtype's tolerance; -O0 compiles the program as written.
DEFAULT_OPT = 2


class Pass:
    """A rewrite of the graph, by name; the settings it reads are `PassSettings` fields. A
    `frozen_only` pass rewrites weights, so it does nothing unless the user froze them."""

    name: ClassVar[str]
    frozen_only: ClassVar[bool] = False

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        raise NotImplementedError


class WeightPass(Pass):
    """A pass that rewrites the weights as well as the graph: only frozen weights (`--freeze`) are
    the program's to change, so without them it does nothing."""

    frozen_only = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if not ctx.frozen or ctx.weights is None:
            return graph
        return self.rewrite(graph, ctx, ctx.weights)

    def rewrite(self, graph: Graph, ctx: PassContext, weights: dict[str, np.ndarray]) -> Graph:
        raise NotImplementedError


def check_pass_name(name: str) -> str:
    """`name`, when a pass has it; else an error that lists those that do."""
    if name not in PASSES:
        listed = f"passes: {', '.join(sorted(PASSES))}"
        raise ShipeiError(f"unknown pass '{name}'", hint=did_you_mean(name, list(PASSES), listed))
    return name


def get_pass(name: str) -> Pass:
    module, cls = PASSES[check_pass_name(name)]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)()


def select_passes(opt: int, passes: Sequence[str] | None, disabled: Sequence[str], frozen: bool) -> list[str]:
    """The `-O{opt}` pipeline, or the `passes` named; less `disabled`. Naming a pass that rewrites
    weights when they are not frozen is an error, as it would silently do nothing."""
    if passes is None:
        return pipeline(opt, disabled)
    for name in disabled:
        get_pass(name)
    names = [p for p in passes if p not in disabled]
    for name in names:
        if get_pass(name).frozen_only and not frozen:
            raise ShipeiError(f"pass '{name}' rewrites the weights, which are not frozen, so it would do nothing",
                              hint="add --freeze (freeze=True in shipei.compile) to make them part of the program")
    return names


def pipeline(opt: int, disabled: Sequence[str] = ()) -> list[str]:
    if opt not in PIPELINES:
        raise ShipeiError(f"unknown optimization level -O{opt}", hint="levels are 0 to 3")
    for name in disabled:
        get_pass(name)
    return [p for p in PIPELINES[opt] if p not in disabled]


def run_passes(graph: Graph, names: Sequence[str], ctx: PassContext | None = None) -> Graph:
    """Run passes in order; verify after each (when ctx.verify), time and dump as asked."""
    from ..printer import print_graph
    from ..verifier import verify

    ctx = ctx or PassContext()
    for name in names:
        p = get_pass(name)
        before = len(graph.nodes)
        start = time.perf_counter()
        graph = p.run(graph, ctx)
        ctx.timings.append(PassTiming(name, time.perf_counter() - start, before, len(graph.nodes)))
        if ctx.verify:
            try:
                verify(graph)
            except ShipeiError as e:
                raise ShipeiError(f"IR is invalid after pass '{name}': {e.message}", e.loc, e.hint) from None
        if ctx.wants_print(name):
            print(f"// -----// IR after {name} //----- //", file=ctx.out)
            print(print_graph(graph), file=ctx.out, end="")
    unprinted = sorted((ctx.print_after or set()) - {"all"} - set(names))
    if unprinted:
        print(f"note: nothing printed after {', '.join(unprinted)}: not among the passes run "
              f"({', '.join(names) or 'none'})", file=ctx.out)
    if ctx.time_passes:
        print(format_timings(ctx.timings), file=ctx.out)
    return graph


def format_timings(timings: list[PassTiming]) -> str:
    total = sum(t.seconds for t in timings) or 1e-12
    lines = ["pass                      time ms    share   nodes"]
    for t in timings:
        share = t.seconds / total
        lines.append(f"{t.name:<24} {t.seconds * 1e3:8.2f} {share:7.1%}   {t.nodes_before} -> {t.nodes_after}")
    lines.append(f"{'total':<24} {total * 1e3:8.2f}")
    return "\n".join(lines)

