"""cse: one node per distinct expression; commutative operands in any order."""

from __future__ import annotations

from hypothesis import given
from pass_testing import after, assert_preserves, idempotent

from shipei.testing import graphs

BEFORE = """\
graph @G(%x: f32[B, 2], %y: f32[B, 2]) -> (f32[B, 2]) {
  %0 = add(%x, %y) : f32[B, 2]
  %1 = add(%y, %x) : f32[B, 2]
  %2 = iota() {length = B} : i64[B]
  %3 = iota() {length = B} : i64[B]
  %4 = constant() {value = array<0.5>, dtype = f32} : f32[]
  %5 = constant() {value = array<0.5>, dtype = f32} : f32[]
  %6 = mul(%0, %4) : f32[B, 2]
  %7 = mul(%1, %5) : f32[B, 2]
  %8 = sub(%6, %7) : f32[B, 2]
  return %8
}
"""

EXPECTED = """\
graph @G(%x: f32[B, 2], %y: f32[B, 2]) -> (f32[B, 2]) {
  %0 = add(%x, %y) : f32[B, 2]
  %1 = constant() {value = array<0.5>, dtype = f32} : f32[]
  %2 = mul(%0, %1) : f32[B, 2]
  %3 = sub(%2, %2) : f32[B, 2]
  return %3
}
"""


def test_golden() -> None:
    assert after(BEFORE, "cse", "dce") == EXPECTED


def test_different_constants_and_attributes_stay_apart() -> None:
    text = """graph @G(%x: f32[B, 4]) -> (f32[], f32[], f32[B, 4], f32[B, 4]) {
      %0 = constant() {value = array<0.0>, dtype = f32} : f32[]
      %1 = constant() {value = array<-0.0>, dtype = f32} : f32[]
      %2 = softmax(%x) {axis = 0} : f32[B, 4]
      %3 = softmax(%x) {axis = 1} : f32[B, 4]
      return %0, %1, %2, %3
    }"""
    assert after(text, "cse") == after(text)


def test_idempotent() -> None:
    assert idempotent(BEFORE, "cse", "dce")


@given(graphs(max_nodes=8))
def test_preserves_meaning(graph) -> None:
    assert_preserves(graph, ["cse"])
