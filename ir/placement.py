"""Where a node runs: a (target, device) pair, written `target:device[:index]`.

`torch:cuda:0`, `jax:tpu`, `tf:cpu`, `mindspore:ascend:1`. A hint may name less: a device kind
(`gpu`), a target (`jax`) or both without an index; the partition pass turns every hint into a
full placement that matches it. Device kinds have the frameworks' names (`cuda`, `ascend`), and
the words people use for them (`gpu`, `npu`) are aliases.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ShipeiError, SourceLoc, did_you_mean

#: The frameworks shipei generates programs for; `codegen` has one generator per name.
TARGETS = ("torch", "jax", "tf", "mindspore")
#: Device kinds, by the frameworks' names, and the other names people use for them.
DEVICE_KINDS = ("cpu", "cuda", "tpu", "ascend")
DEVICE_ALIASES = {"gpu": "cuda", "npu": "ascend"}


@dataclass(frozen=True)
class Placement:
    """A target and a device; either may be None in a hint (`gpu`: any target, on a GPU)."""

    target: str | None = None
    device: str | None = None
    index: int | None = None

    @staticmethod
    def parse(text: str, loc: SourceLoc | None = None) -> Placement:
        """`torch:cuda:0`, `jax:tpu`, `gpu`, `jax`, `cuda:1`: a target, a device kind with an
        optional index, or both; anything else is an error at `loc` saying what is known."""
        parts = text.split(":")
        target = parts.pop(0) if parts and parts[0] in TARGETS else None
        device = index = None
        if parts and not parts[0].isdigit():
            word = parts.pop(0)
            device = DEVICE_ALIASES.get(word, word)
            if device not in DEVICE_KINDS:
                known = [*TARGETS, *DEVICE_KINDS, *DEVICE_ALIASES]
                raise ShipeiError(f"unknown target or device '{word}' in placement '{text}'", loc,
                                  hint=did_you_mean(word, known, f"targets are {', '.join(TARGETS)}; devices are "
                                                                 f"{', '.join(DEVICE_KINDS)} (or gpu, npu)"))
        if parts and parts[0].isdigit() and device is not None:
            index = int(parts.pop(0))
        if parts or (target is None and device is None):
            raise ShipeiError(f"placement '{text}' is not target:device[:index]", loc,
                              hint="e.g. torch:cuda:0, jax:tpu, tf:cpu, gpu, mindspore")
        return Placement(target, device, index)

    @property
    def full(self) -> bool:
        """Both target and device known: where a node can run."""
        return self.target is not None and self.device is not None

    def allows(self, other: Placement) -> bool:
        """Whether the full placement `other` satisfies this hint."""
        return ((self.target is None or self.target == other.target)
                and (self.device is None or self.device == other.device)
                and (self.index is None or self.index == (other.index or 0)))

    def __str__(self) -> str:
        parts = [p for p in (self.target, self.device) if p is not None]
        if self.index is not None:
            parts.append(str(self.index))
        return ":".join(parts)
