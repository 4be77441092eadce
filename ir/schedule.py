"""Learning-rate schedules: the rate of each step, a function of the step alone.

Closed forms of torch.optim.lr_scheduler's (which the tests use as the oracle), so a run
resumed at step t, on any target, continues at the rate it left off with:

- constant: lr.
- step: lr * gamma^floor(t / step_size) (StepLR).
- cosine: eta_min + (lr - eta_min) (1 + cos(pi t / T)) / 2 for t in [0, T] (CosineAnnealingLR),
  eta_min after.
- a linear warm-up over the first `warmup` steps, before any of them: lr * (t + 1) / (warmup + 1)
  at step t (LinearLR from 1 / (warmup + 1)), and the schedule's own steps counted after it.

`t` counts optimizer steps from 0: the rate the first step uses is `rate(0)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ShipeiError

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    name: str
    lr: float
    total: int = 0  # cosine: T, the steps it anneals over (after warm-up)
    step_size: int = 1
    gamma: float = 0.1
    eta_min: float = 0.0
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ShipeiError(f"unknown schedule '{self.name}'", hint=f"schedules are {', '.join(SCHEDULES)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ShipeiError(f"the learning rate must be positive, got {self.lr}")
        if self.warmup < 0 or self.step_size < 1 or (self.name == "cosine" and self.total < 1):
            raise ShipeiError("warm-up must be >= 0 steps, step_size >= 1, and a cosine schedule needs its total steps")

    def rate(self, t: int) -> float:
        """The learning rate of step `t` (0 for the first)."""
        if t < self.warmup:
            return self.lr * (t + 1) / (self.warmup + 1)
        t -= self.warmup
        if self.name == "step":
            return self.lr * self.gamma ** (t // self.step_size)
        if self.name == "cosine":
            if t >= self.total:
                return self.eta_min
            return self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * t / self.total)) / 2
        return self.lr
