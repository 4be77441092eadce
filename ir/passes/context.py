"""What a pipeline run reads and writes besides the graph: typed settings, the target, results.

- `PassSettings`: what a user may set (`pass_options` in `shipei.compile`, `--pass-option` on the
  command line), each typed, defaulted and owned by the pass that reads it; a name no pass reads
  or a value of the wrong kind is an error before any pass runs.
- `TargetInfo`: what the passes may know of the target they optimize for, as data built by
  `codegen.target_info` (the IR imports no code generator): its preferred layout, whether it
  multiplies int8 weights itself, which ops it lowers natively (the rest are decomposed).
- `PassResults`: what passes found, for the facade and the command line to report.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from ..errors import ShipeiError, did_you_mean, whole_number

if TYPE_CHECKING:
    from ..graph import Node
    from .partition import PartitionReport, PartitionRequest
    from .plan_memory import MemoryPlan


def _setting(default: Any, kind: type, owner: str, help: str) -> Any:
    """A setting of the passes named in `owner` ("a" or "a and b"), which read it."""
    factory = {"default_factory": dict} if kind is dict else {"default": default}
    return field(**factory, metadata={"kind": kind, "pass": owner, "help": help})


_KINDS = {int: "an int", float: "a float", bool: "true or false", str: "a string", dict: "a mapping"}


@dataclass(frozen=True)
class PassSettings:
    """The settings passes read; `parse` checks a user's mapping against them."""

    fold_limit: int = _setting(1024, int, "fold-constants", "most elements a fold may add to its operands'")
    freeze_inline: int = _setting(1, int, "freeze", "most elements of a frozen value inlined")
    max_group_size: int = _setting(32, int, "fuse", "the most nodes in one fused group")
    layout: str | None = _setting(None, str, "layout", "NCHW or NHWC (default: the target's preference)")
    dims: Mapping[str, int] = _setting(None, dict, "plan-memory",
                                       "the shape symbols' values to plan at, e.g. {'B': 8} (others are 1)")
    sparsity: float = _setting(0.5, float, "prune", "fraction of weights (or channels) set to zero")
    structured: bool = _setting(False, bool, "prune", "prune whole output channels instead of single weights")
    prune_min_elements: int = _setting(1024, int, "prune", "fewest elements of a weight to prune")
    quantize_min_elements: int = _setting(1024, int, "quantize", "fewest elements of a weight to quantize")
    int8_matmul: bool | None = _setting(None, bool, "quantize",
                                        "fold scales past the matmul, as for int8 GEMMs (default: the target's)")
    training: bool = _setting(False, bool, "simplify and fold-batch-norm",
                              "true for a training graph: dropout and batch norm stay")

    @classmethod
    def parse(cls, options: Mapping[str, object] | None) -> PassSettings:
        """Settings from a user's mapping: a name no pass reads, or a value of the wrong kind (a
        typo must not be ignored), is an error naming the pass that reads it."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in (options or {}).items():
            if key not in fields:
                listed = f"pass options: {', '.join(sorted(fields))}"
                raise ShipeiError(f"unknown pass option '{key}'", hint=did_you_mean(key, list(fields), listed))
            meta = fields[key].metadata
            if not _accepts(meta["kind"], value):
                raise ShipeiError(f"pass option '{key}' expects {_KINDS[meta['kind']]}, got {value!r}",
                                  hint=f"{meta['pass']} reads {key}: {meta['help']}")
        settings = cls(**dict(options or {}))
        for symbol, value in settings.dims.items():
            whole_number(value, f"pass option dims: {symbol}")
        return settings

    def __str__(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))


def _accepts(kind: type, value: object) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _lowers_nothing(node: Node) -> bool:
    return False


@dataclass(frozen=True)
class TargetInfo:
    """The target a pipeline optimizes for, as the passes see it."""

    name: str
    layout: str = "NCHW"
    int8_matmul: bool = False
    native: Callable[[Node], bool] = _lowers_nothing  # whether it lowers a node itself


@dataclass
class PassResults:
    """What the passes found."""

    memory_plan: MemoryPlan | None = None
    prune_report: dict[str, Any] = field(default_factory=dict)
    quantize_report: dict[str, Any] = field(default_factory=dict)
    partition_report: PartitionReport | None = None  # where each node was placed, and why


@dataclass
class PassTiming:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int


@dataclass
class PassContext:
    """One pipeline run: settings, target, the weights that weight-rewriting passes may change,
    what to print, and the results."""

    weights: dict[str, np.ndarray] | None = None
    frozen: bool = False
    settings: PassSettings = field(default_factory=PassSettings)
    target: TargetInfo | None = None
    partition: PartitionRequest | None = None  # what the partition pass chooses among
    verify: bool = True
    print_after: set[str] | None = None      # names, or {"all"}
    time_passes: bool = False
    out: TextIO = field(default_factory=lambda: sys.stderr)
    timings: list[PassTiming] = field(default_factory=list)
    results: PassResults = field(default_factory=PassResults)

    def wants_print(self, name: str) -> bool:
        return bool(self.print_after) and ("all" in self.print_after or name in self.print_after)

    @property
    def native(self) -> Callable[[Node], bool]:
        """Whether the target lowers a node itself; with no target, nothing is assumed lowered."""
        return self.target.native if self.target else _lowers_nothing
