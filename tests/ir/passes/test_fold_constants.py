"""fold-constants: evaluation by the numpy reference, exactly as the interpreter computes."""

from __future__ import annotations

from hypothesis import given
from pass_testing import after, assert_preserves, idempotent

from shipei.testing import graphs

BEFORE = """\
graph @G(%x: f32[B, 2]) -> (f32[B, 2], f32[4096, 4096], i64[3]) {
  %a = constant() {value = array<[1.0, 4.0]>, dtype = f32} : f32[2]
  %b = sqrt(%a) : f32[2]
  %c = add(%b, %b) : f32[2]
  %y = mul(%x, %c) : f32[B, 2]
  %z = constant() {value = array<0.0>, dtype = f32} : f32[]
  %big = broadcast_to(%z) {shape = [4096, 4096]} : f32[4096, 4096]
  %i = iota() {length = 3} : i64[3]
  return %y, %big, %i
}
"""

# The 16M-element broadcast stays an op; the folded-away constants are left for dce.
EXPECTED = """\
graph @G(%x: f32[B, 2]) -> (f32[B, 2], f32[4096, 4096], i64[3]) {
  %0 = constant() {value = array<[1.0, 4.0]>, dtype = f32} : f32[2]
  %1 = constant() {value = array<[1.0, 2.0]>, dtype = f32} : f32[2]
  %2 = constant() {value = array<[2.0, 4.0]>, dtype = f32} : f32[2]
  %3 = mul(%x, %2) : f32[B, 2]
  %4 = constant() {value = array<0.0>, dtype = f32} : f32[]
  %5 = broadcast_to(%4) {shape = [4096, 4096]} : f32[4096, 4096]
  %6 = constant() {value = array<[0, 1, 2]>, dtype = i64} : i64[3]
  return %3, %5, %6
}
"""


def test_golden() -> None:
    assert after(BEFORE, "fold-constants") == EXPECTED


def test_folds_at_the_declared_dtype() -> None:
    """f16 arithmetic rounds to f16, as the interpreter's declared precision does."""
    text = """graph @G() -> (f16[]) {
      %a = constant() {value = array<1.0>, dtype = f16} : f16[]
      %b = constant() {value = array<0.0001>, dtype = f16} : f16[]
      %c = add(%a, %b) : f16[]
      return %c
    }"""
    assert "%2 = constant() {value = array<1.0>, dtype = f16} : f16[]" in after(text, "fold-constants")


def test_symbolic_shapes_and_errors_are_left_to_run_time() -> None:
    text = """graph @G(%x: f32[B]) -> (i64[B], f32[2]) {
      %0 = iota() {length = B} : i64[B]
      %t = constant() {value = array<[1.0, 2.0]>, dtype = f32} : f32[2]
      %i = constant() {value = array<[5, 0]>, dtype = i64} : i64[2]
      %1 = gather(%t, %i) : f32[2]
      return %0, %1
    }"""
    out = after(text, "fold-constants")
    assert "iota() {length = B" in out and "gather(" in out


def test_fold_limit_is_an_option() -> None:
    assert "broadcast_to" not in after(BEFORE.replace("4096", "16"), "fold-constants", "dce")
    assert "broadcast_to" in after(BEFORE.replace("4096", "16"), "fold-constants", fold_limit=16)


def test_idempotent() -> None:
    assert idempotent(BEFORE, "fold-constants", "dce")


@given(graphs(max_nodes=8))
def test_preserves_meaning(graph) -> None:
    assert_preserves(graph, ["fold-constants"])
