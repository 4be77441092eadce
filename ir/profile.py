"""Measured costs: seconds per node at a placement, as `shipei bench --profile` timed them, for the
cost model (`ir.cost`) to use in place of its analytic roofline.

A node is known by its signature: its op, attributes and the concrete types of its operands and
results (`matmul : (f32[2,64,128], f32[128,512]) -> (f32[2,64,512])`), so a profile applies to any
graph holding that computation at those shapes: the same model at the micro-batch it was measured
at, a pipeline stage of it, a model sharing its layers. A fused group is timed as one program and
its time shared among its nodes in proportion to their analytic costs. A call's fixed part (a
framework's dispatch of the whole program) is measured apart, per placement.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ShipeiError
from .graph import Node
from .printer import format_attrs
from .types import TensorType, concrete_shape

VERSION = 1


def signature(node: Node, dims: Mapping[str, int]) -> str:
    """What a node computes, at `dims`: the key a profile is looked up by."""
    def types(values: list) -> str:
        return ", ".join(str(TensorType(v.dtype, concrete_shape(v.shape, dims))) for v in values)

    attrs = f" {format_attrs(node)}" if node.attrs else ""
    return f"{node.op}{attrs} : ({types(node.operands)}) -> ({types(node.results)})"


@dataclass
class Profile:
    """Seconds per node signature, and per call, for each placement measured (`torch:cpu`)."""

    model: str = ""
    dims: dict[str, int] = field(default_factory=dict)
    threads: int = 1
    nodes: dict[str, dict[str, float]] = field(default_factory=dict)  # placement -> signature -> seconds
    call: dict[str, float] = field(default_factory=dict)  # placement -> seconds per call beyond its nodes

    def seconds(self, node: Node, placement: str, dims: Mapping[str, int]) -> float | None:
        """The measured seconds of `node` at `placement` (its target and device kind), or None. A
        node that reads nothing (a constant) is never measured: it costs nothing to run."""
        if not node.operands:
            return None
        return self.nodes.get(placement, {}).get(signature(node, dims))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"version": VERSION, "model": self.model, "dims": self.dims,
                                          "threads": self.threads, "call": self.call, "nodes": self.nodes},
                                         indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Profile:
        """A profile `save` wrote; anything else is a `ShipeiError` naming the file and what is wrong."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ShipeiError(f"cannot read the profile {path}: {e}") from None
        except json.JSONDecodeError as e:
            raise ShipeiError(f"{path} is not a profile: not JSON ({e})") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ShipeiError(f"{path} is not a version-{VERSION} profile",
                              hint="write one with shipei bench FILE --profile PROFILE")
        nodes, call = data.get("nodes"), data.get("call")
        if not (_seconds_table(call) and isinstance(nodes, dict) and all(
                isinstance(p, str) and _seconds_table(t) for p, t in nodes.items())):
            raise ShipeiError(f"{path} is not a profile: 'nodes' and 'call' must map placements to "
                              f"non-negative seconds")
        dims = data.get("dims", {})
        if not (isinstance(dims, dict) and all(isinstance(v, int) for v in dims.values())):
            raise ShipeiError(f"{path} is not a profile: 'dims' must map shape symbols to integers")
        return cls(str(data.get("model", "")), dims, int(data.get("threads", 1)), nodes, call)


def _seconds_table(table: object) -> bool:
    return isinstance(table, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for k, v in table.items())
