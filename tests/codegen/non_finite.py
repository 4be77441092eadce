"""Inputs holding NaN and infinities, for the tests of how the targets compute with them."""

from __future__ import annotations

import numpy as np


def with_non_finite(x: np.ndarray, negative_row: bool = False) -> np.ndarray:
    """A copy of x (rows: its first axis) with a NaN in row 1, +inf in row 2, -inf in row 3 and,
    where `negative_row`, -inf throughout row 4; the other rows as they were."""
    x = x.copy()
    rows = x.reshape(x.shape[0], -1)
    rows[1, 5], rows[2, 7], rows[3, 9] = np.nan, np.inf, -np.inf
    if negative_row:
        rows[4] = -np.inf
    return x
