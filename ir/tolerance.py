"""How close a target's output must be to the reference, per dtype.

Start from torch.testing's defaults and loosen only where a documented difference calls for it;
the comparison is assert_close's: |actual - expected| <= atol + rtol * |expected|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import DType


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


#: Whole models compound rounding over many ops, so f32 uses rtol 1e-4 rather than torch.testing's
#: single-op 1.3e-6; the low-precision rows start from torch.testing's rtol with an atol that
#: covers rounding compounded over a chain of ops near zero (see docs/known-differences.md).
TOLERANCES: dict[DType, Tolerance] = {
    DType.f16: Tolerance(2e-3, 1e-3),
    DType.bf16: Tolerance(1.6e-2, 1e-2),
    DType.f32: Tolerance(1e-4, 1e-5),
    DType.f64: Tolerance(1e-7, 1e-7),
    DType.i32: Tolerance(0, 0),
    DType.i64: Tolerance(0, 0),
    DType.bool: Tolerance(0, 0),
}


#: For programs that compute in reduced precision on purpose (torch autocast, jax bf16 compute,
#: MindSpore mixed precision): bf16 keeps ~3 significant digits per op, so after a few layers
#: O(1) outputs differ by ~1e-2 in absolute terms as well.
MIXED_PRECISION = Tolerance(2e-2, 2e-2)


@dataclass(frozen=True)
class Mismatch:
    """The worst element of a comparison: where, both values and how far past tolerance."""

    index: tuple[int, ...]
    actual: float
    expected: float
    error: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.error <= self.allowed


def compare(actual: np.ndarray, expected: np.ndarray, dtype: DType, tol: Tolerance | None = None) -> Mismatch:
    """Worst element by error/allowed ratio under `tol` (default: the dtype's); shapes must agree."""
    tol = tol or TOLERANCES[dtype]
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape {a.shape} != {e.shape}")
    if a.size == 0:
        return Mismatch((), 0.0, 0.0, 0.0, 0.0)
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf is caught by `same`
        error = np.where(same, 0.0, np.abs(a - e))
    error = np.where(np.isnan(error), np.inf, error)
    allowed = tol.atol + tol.rtol * np.abs(np.where(np.isfinite(e), e, 0.0))
    worst = np.unravel_index(np.argmax(error - allowed), a.shape)
    return Mismatch(tuple(int(i) for i in worst), float(a[worst]), float(e[worst]), float(error[worst]),
                    float(allowed[worst]))
