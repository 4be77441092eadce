"""The measuring pieces `shipei bench` uses: percentiles, the process's memory, energy counters."""

from __future__ import annotations

import numpy as np
import pytest
from shipei.runtime.measure import _wrapping, energy_meter, peak_rss_bytes, percentile, reset_peak_rss, rss_bytes


@pytest.mark.parametrize("q", [1, 50, 90, 99, 100])
def test_percentile_is_a_measured_value_at_the_nearest_rank(q: float) -> None:
    samples = list(np.random.default_rng(0).exponential(size=137))
    assert percentile(samples, q) == np.percentile(samples, q, method="inverted_cdf")


def test_peak_rss_sees_an_allocation_and_starts_over_on_reset() -> None:
    reset_peak_rss()
    before = rss_bytes()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    peak = peak_rss_bytes()
    assert peak - before >= 60 * 2**20
    del block
    reset_peak_rss()
    assert peak_rss_bytes() < peak


def test_a_wrapping_counter_counts_on_past_its_range() -> None:
    readings = iter([90.0, 95.0, 3.0, 10.0])  # a 100 J counter that wraps between 95 and 3
    total = _wrapping(lambda: next(readings), span=100.0)
    assert total() == 5.0 and total() == 13.0 and total() == 20.0


def test_an_absent_counter_says_why() -> None:
    meter, why = energy_meter("tpu")
    assert meter is None and "no energy counter" in why
    meter, why = energy_meter("cpu")
    assert (meter is None) == bool(why)
