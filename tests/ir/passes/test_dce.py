"""dce: dead nodes go; params go only from frozen graphs."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from pass_testing import after, assert_preserves, idempotent

from shipei.testing import graphs

BEFORE = """\
graph @G(%x: f32[B, 2], %w: param f32[2] = zeros(), %unused: buffer i64[] = zeros()) -> (f32[B, 2]) {
  %0 = exp(%x) : f32[B, 2]
  %1 = add(%x, %w) : f32[B, 2]
  %2 = neg(%0) : f32[B, 2]
  return %1
}
"""

EXPECTED = """\
graph @G(%x: f32[B, 2], %w: param f32[2] = zeros(), %unused: buffer i64[] = zeros()) -> (f32[B, 2]) {
  %0 = add(%x, %w) : f32[B, 2]
  return %0
}
"""


def test_golden() -> None:
    assert after(BEFORE, "dce") == EXPECTED


def test_frozen_graphs_lose_unused_params_and_their_weights() -> None:
    weights = {"w": np.zeros(2, np.float32), "unused": np.zeros((), np.int64)}
    out = after(BEFORE, "dce", weights=weights, frozen=True)
    assert "%unused" not in out and set(weights) == {"w"}


def test_idempotent() -> None:
    assert idempotent(BEFORE, "dce")


@given(graphs(max_nodes=8))
def test_preserves_meaning(graph) -> None:
    graph.outputs = graph.outputs[:1]  # make the rest dead
    out = assert_preserves(graph, ["dce"])
    users = out.users()
    assert all(any(r in users or r in out.outputs for r in n.results) for n in out.nodes)
