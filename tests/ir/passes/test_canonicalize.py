"""canonicalize: operand order, mirrored comparisons, scalar constants, constant dtypes, axes."""

from __future__ import annotations

from hypothesis import given
from pass_testing import after, assert_preserves, idempotent

from shipei.testing import graphs

BEFORE = """\
graph @G(%x: f32[B, 3], %w: param f32[3] = zeros()) -> (f32[B, 3], bool[B, 3], f32[B, 3], f32[B]) {
  %c = constant() {value = array<[[2.0, 2.0, 2.0]]>, dtype = f32} : f32[1, 3]
  %0 = add(%w, %x) : f32[B, 3]
  %1 = mul(%c, %0) : f32[B, 3]
  %2 = gt(%c, %1) : bool[B, 3]
  %h = constant() {value = array<1.1>, dtype = f32} : f32[]
  %3 = softmax(%1) {axis = -1} : f32[B, 3]
  %4 = reduce_sum(%3) {axes = [-1]} : f32[B]
  %5 = mul(%h, %3) : f32[B, 3]
  return %1, %2, %5, %4
}
"""

EXPECTED = """\
graph @G(%x: f32[B, 3], %w: param f32[3] = zeros()) -> (f32[B, 3], bool[B, 3], f32[B, 3], f32[B]) {
  %0 = add(%x, %w) : f32[B, 3]
  %1 = constant() {value = array<2.0>, dtype = f32} : f32[]
  %2 = mul(%0, %1) : f32[B, 3]
  %3 = constant() {value = array<2.0>, dtype = f32} : f32[]
  %4 = lt(%2, %3) : bool[B, 3]
  %5 = constant() {value = array<1.100000023841858>, dtype = f32} : f32[]
  %6 = softmax(%2) {axis = 1} : f32[B, 3]
  %7 = reduce_sum(%6) {axes = [1], keepdims = false} : f32[B]
  %8 = mul(%6, %5) : f32[B, 3]
  return %2, %4, %8, %7
}
"""


def test_golden() -> None:
    assert after(BEFORE, "canonicalize", "dce") == EXPECTED


def test_a_splat_that_sets_the_result_shape_keeps_its_shape() -> None:
    text = """graph @G(%x: f32[3]) -> (f32[2, 3]) {
      %c = constant() {value = array<[[1.5, 1.5, 1.5], [1.5, 1.5, 1.5]]>, dtype = f32} : f32[2, 3]
      %0 = mul(%x, %c) : f32[2, 3]
      return %0
    }"""
    assert "array<[[1.5, 1.5, 1.5], [1.5, 1.5, 1.5]]>" in after(text, "canonicalize")


def test_reducing_every_axis_is_written_none() -> None:
    text = """graph @G(%x: f32[B, 3]) -> (f32[]) {
      %0 = reduce_max(%x) {axes = [1, -2]} : f32[]
      return %0
    }"""
    assert "{axes = none, keepdims = false}" in after(text, "canonicalize")


def test_idempotent() -> None:
    assert idempotent(BEFORE, "canonicalize")


@given(graphs(max_nodes=8))
def test_preserves_meaning(graph) -> None:
    out = assert_preserves(graph, ["canonicalize"])
    assert after(str(out), "canonicalize") == str(out)
