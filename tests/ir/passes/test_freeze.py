"""freeze: values frozen weights determine are computed once, as new params (scalars inline)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from pass_testing import after, assert_preserves, idempotent

from shipei.testing import graphs

BEFORE = """\
graph @Linear(%x: f32[B, 3], %fc.weight: param f32[2, 3] = zeros(), %fc.bias: param f32[2] = zeros(), \
%scale: buffer f32[] = ones(), %emb: param f32[4, 1] = zeros()) -> (f32[B, 2], f32[4, 8]) {
  %0 = transpose(%fc.weight) {perm = [1, 0]} : f32[3, 2]
  %1 = matmul(%x, %0) : f32[B, 2]
  %2 = reshape(%fc.bias) {shape = [1, 2]} : f32[1, 2]
  %3 = add(%1, %2) : f32[B, 2]
  %4 = mul(%3, %scale) : f32[B, 2]
  %5 = broadcast_to(%emb) {shape = [4, 8]} : f32[4, 8]
  return %4, %5
}
"""

# The transposed weight and reshaped bias are stored as computed; the scalar buffer is written
# inline; the broadcast would store more than the weight it reads, so it still runs.
EXPECTED = """\
graph @Linear(%x: f32[B, 3], %emb: param f32[4, 1] = zeros(), %fc.weight_transpose: param f32[3, 2] = zeros(), \
%fc.bias_reshape: param f32[1, 2] = zeros()) -> (f32[B, 2], f32[4, 8]) {
  %0 = constant() {value = array<2.0>, dtype = f32} : f32[]
  %1 = matmul(%x, %fc.weight_transpose) : f32[B, 2]
  %2 = add(%1, %fc.bias_reshape) : f32[B, 2]
  %3 = mul(%2, %0) : f32[B, 2]
  %4 = broadcast_to(%emb) {shape = [4, 8]} : f32[4, 8]
  return %3, %4
}
"""


def _weights() -> dict[str, np.ndarray]:
    return {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "fc.bias": np.array([1, 2], np.float32),
            "scale": np.array(2.0, np.float32), "emb": np.zeros((4, 1), np.float32)}


def test_golden() -> None:
    weights = _weights()
    assert after(BEFORE, "freeze", "dce", weights=weights, frozen=True) == EXPECTED
    assert weights["fc.weight_transpose"].tolist() == [[0, 3], [1, 4], [2, 5]]
    assert weights["fc.weight_transpose"].flags.c_contiguous
    assert set(weights) == {"emb", "fc.weight_transpose", "fc.bias_reshape"}


def test_does_nothing_unless_frozen() -> None:
    assert after(BEFORE, "freeze", weights=_weights()) == after(BEFORE)


def test_a_weight_read_twice_is_kept_beside_its_copy() -> None:
    text = BEFORE.replace("-> (f32[B, 2], f32[4, 8])", "-> (f32[B, 2], f32[4, 8], f32[2, 3])").replace(
        "return %4, %5", "return %4, %5, %fc.weight")
    out = after(text, "freeze", "dce", weights=_weights(), frozen=True)
    assert "%fc.weight: param" in out and "%fc.weight_transpose: param" in out


def test_idempotent() -> None:
    assert idempotent(BEFORE, "freeze", "dce", weights=_weights(), frozen=True)


@given(graphs(max_nodes=8))
def test_preserves_meaning(graph) -> None:
    out = assert_preserves(graph, ["freeze"])
    assert all(p.name in {q.name for q in graph.params} or p.param.init.name == "zeros" for p in out.params)
