"""A test-only target that lowers only primitives: torch's writer with every composite op's
lowering taken away, so each runs through its decomposition (`ir.passes.decompose`). It shows what
a new target costs: lowerings of the primitives, and nothing for gelu, softmax, attention, ...
"""

from __future__ import annotations

import dataclasses
import functools

from shipei.codegen import torch
from shipei.codegen.module import GeneratedModule, write_module
from shipei.ir.graph import Graph
from shipei.ir.registry import all_ops


def _primitives(table: dict) -> dict:
    return {op: rule for op, rule in table.items() if not all_ops()[op].composite}


TARGET = dataclasses.replace(torch.TARGET, name="primitives", rules=_primitives(torch.TARGET.rules), fused_values=None,
                             inplace=_primitives(torch.TARGET.inplace), into=_primitives(torch.TARGET.into))


def emit(graph: Graph, source: str) -> GeneratedModule:
    # no oneDNN post-op kernels: their helper computes composite ops (gelu, silu) itself
    options = torch.Options(None, False, False, False, False, False, fuse_post_ops=False)
    return write_module(TARGET, graph, source, functools.partial(torch.write_model, options=options, target=TARGET))
