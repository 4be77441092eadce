"""simplify: identities, transpose and reshape chains, broadcasts of scalars, same-type casts."""

from __future__ import annotations

from hypothesis import given
from pass_testing import after, assert_preserves, idempotent

from shipei.testing import graphs

BEFORE = """\
graph @G(%x: f32[B, 4, 3], %w: param f32[3, 5] = zeros()) -> (f32[B, 4, 3], f32[B, 3, 4], f32[B, 12], \
f32[B, 4, 3], f32[5, 3], f32[B, 4, 3]) {
  %one = constant() {value = array<1.0>, dtype = f32} : f32[]
  %zero = constant() {value = array<0.0>, dtype = f32} : f32[]
  %0 = mul(%x, %one) : f32[B, 4, 3]
  %1 = sub(%0, %zero) : f32[B, 4, 3]
  %2 = transpose(%1) {perm = [0, 2, 1]} : f32[B, 3, 4]
  %3 = transpose(%2) {perm = [0, 2, 1]} : f32[B, 4, 3]
  %4 = transpose(%3) {perm = [2, 0, 1]} : f32[3, B, 4]
  %5 = transpose(%4) {perm = [1, 0, 2]} : f32[B, 3, 4]
  %6 = reshape(%3) {shape = [B, 2, 6]} : f32[B, 2, 6]
  %7 = reshape(%6) {shape = [B, 12]} : f32[B, 12]
  %8 = cast(%3) {dtype = f32} : f32[B, 4, 3]
  %9 = dropout(%8) {p = 0.1} : f32[B, 4, 3]
  %10 = neg(%9) : f32[B, 4, 3]
  %11 = neg(%10) : f32[B, 4, 3]
  %12 = broadcast_to(%one) {shape = [B, 4, 3]} : f32[B, 4, 3]
  %13 = add(%11, %12) : f32[B, 4, 3]
  %14 = transpose(%w) {perm = [1, 0]} : f32[5, 3]
  %15 = add(%x, %10) : f32[B, 4, 3]
  return %9, %5, %7, %13, %14, %15
}
"""

# x*1, x-0, a transpose pair, a cast to f32 of f32, dropout and -(-x) are all x; two transposes
# compose into one, two reshapes into one; the broadcast scalar is read as a scalar; the weight's
# transpose stays (freeze stores it transposed instead).
EXPECTED = """\
graph @G(%x: f32[B, 4, 3], %w: param f32[3, 5] = zeros()) -> (f32[B, 4, 3], f32[B, 3, 4], f32[B, 12], \
f32[B, 4, 3], f32[5, 3], f32[B, 4, 3]) {
  %0 = constant() {value = array<1.0>, dtype = f32} : f32[]
  %1 = transpose(%x) {perm = [0, 2, 1]} : f32[B, 3, 4]
  %2 = reshape(%x) {shape = [B, 12]} : f32[B, 12]
  %3 = add(%x, %0) : f32[B, 4, 3]
  %4 = transpose(%w) {perm = [1, 0]} : f32[5, 3]
  %5 = sub(%x, %x) : f32[B, 4, 3]
  return %x, %1, %2, %3, %4, %5
}
"""


def test_golden() -> None:
    assert after(BEFORE, "simplify", "dce") == EXPECTED


def test_training_keeps_dropout() -> None:
    assert "dropout(%x) {p = 0.1}" in after(BEFORE, "simplify", "dce", training=True)


def test_identities_never_drop_a_broadcast() -> None:
    text = """graph @G(%x: f32[3]) -> (f32[2, 3], f32[2, 3]) {
      %c = constant() {value = array<[[1.0], [1.0]]>, dtype = f32} : f32[2, 1]
      %0 = mul(%x, %c) : f32[2, 3]
      %b = broadcast_to(%x) {shape = [2, 3]} : f32[2, 3]
      %z = constant() {value = array<0.0>, dtype = f32} : f32[]
      %1 = add(%b, %z) : f32[2, 3]
      return %0, %1
    }"""
    assert after(text, "simplify", "dce").splitlines()[2:5] == [
        "  %1 = mul(%x, %0) : f32[2, 3]", "  %2 = broadcast_to(%x) {shape = [2, 3]} : f32[2, 3]", "  return %1, %2"]


def test_whole_slices_pads_and_one_piece_splits_are_their_operand() -> None:
    text = """graph @G(%x: f32[B, 4]) -> (f32[B, 4], f32[B, 4], f32[B, 4], f32[B, 1]) {
      %0 = slice(%x) {axes = [1], starts = [0], stops = [4611686018427387904], steps = [1]} : f32[B, 4]
      %1 = pad(%0) {pads = [0, 0, 0, 0]} : f32[B, 4]
      %2 = split(%1) {sizes = [4], axis = 1} : f32[B, 4]
      %3 = reduce_sum(%x) {axes = [1], keepdims = true} : f32[B, 1]
      %4 = reduce_mean(%3) {axes = [1], keepdims = true} : f32[B, 1]
      return %0, %1, %2, %4
    }"""
    assert after(text, "simplify", "dce").splitlines()[1:3] == [
        "  %0 = reduce_sum(%x) {axes = [1], keepdims = true} : f32[B, 1]", "  return %x, %x, %x, %0"]


def test_idempotent() -> None:
    assert idempotent(BEFORE, "simplify", "dce")


@given(graphs(max_nodes=8))
def test_preserves_meaning(graph) -> None:
    assert_preserves(graph, ["simplify"])
