"""layout: NHWC between convolutions for targets that ask for it, transposes at the edges only."""

from __future__ import annotations

import pytest
from hypothesis import given
from pass_testing import after, assert_preserves, idempotent
from shipei.codegen import target_info
from shipei.ir.errors import ShipeiError
from shipei.ir.passes.context import TargetInfo

from shipei.testing import graphs

BEFORE = """\
graph @Net(%x: f32[B, 2, 8, 8], %w1: param f32[4, 2, 3, 3] = zeros(), %b1: param f32[4] = zeros(), \
%w2: param f32[4, 4, 3, 3] = zeros()) -> (f32[B, 4]) {
  %0 = conv2d(%x, %w1) {padding = [1]} : f32[B, 4, 8, 8]
  %1 = reshape(%b1) {shape = [4, 1, 1]} : f32[4, 1, 1]
  %2 = add(%0, %1) : f32[B, 4, 8, 8]
  %3 = relu(%2) : f32[B, 4, 8, 8]
  %4 = conv2d(%3, %w2) {padding = [1]} : f32[B, 4, 8, 8]
  %5 = add(%4, %3) : f32[B, 4, 8, 8]
  %6 = max_pool2d(%5) {kernel = [8], stride = [8]} : f32[B, 4, 1, 1]
  %7 = reshape(%6) {shape = [B, 4]} : f32[B, 4]
  return %7
}
"""

# The bias add, relu and residual add run channels-last; each conv and pool reads and writes
# NCHW through a transpose at its edge (which XLA folds into the convolution).
EXPECTED = """\
graph @Net(%x: f32[B, 2, 8, 8], %w1: param f32[4, 2, 3, 3] = zeros(), %b1: param f32[4] = zeros(), \
%w2: param f32[4, 4, 3, 3] = zeros()) -> (f32[B, 4]) {
  %0 = conv2d(%x, %w1) {stride = [1, 1], padding = [1], dilation = [1, 1], groups = 1} : f32[B, 4, 8, 8]
  %1 = transpose(%0) {perm = [0, 2, 3, 1]} : f32[B, 8, 8, 4]
  %2 = reshape(%b1) {shape = [4, 1, 1]} : f32[4, 1, 1]
  %3 = reshape(%2) {shape = [1, 4, 1, 1]} : f32[1, 4, 1, 1]
  %4 = transpose(%3) {perm = [0, 2, 3, 1]} : f32[1, 1, 1, 4]
  %5 = add(%1, %4) : f32[B, 8, 8, 4]
  %6 = relu(%5) : f32[B, 8, 8, 4]
  %7 = transpose(%6) {perm = [0, 3, 1, 2]} : f32[B, 4, 8, 8]
  %8 = conv2d(%7, %w2) {stride = [1, 1], padding = [1], dilation = [1, 1], groups = 1} : f32[B, 4, 8, 8]
  %9 = transpose(%8) {perm = [0, 2, 3, 1]} : f32[B, 8, 8, 4]
  %10 = add(%9, %6) : f32[B, 8, 8, 4]
  %11 = transpose(%10) {perm = [0, 3, 1, 2]} : f32[B, 4, 8, 8]
  %12 = max_pool2d(%11) {kernel = [8], stride = [8], padding = [0, 0]} : f32[B, 4, 1, 1]
  %13 = reshape(%12) {shape = [B, 4]} : f32[B, 4]
  return %13
}
"""


def test_golden() -> None:
    assert after(BEFORE, "layout", "dce", layout="NHWC") == EXPECTED


BATCH_NORM = """\
graph @Net(%x: f32[B, 2, 8, 8], %w: param f32[4, 2, 3, 3] = zeros(), %m: param f32[4] = zeros(), \
%v: param f32[4] = ones(), %g: param f32[4] = ones(), %b: param f32[4] = zeros()) -> (f32[B, 4, 4, 4]) {
  %0 = conv2d(%x, %w) {padding = [1]} : f32[B, 4, 8, 8]
  %1 = batch_norm(%0, %m, %v, %g, %b) {eps = 0.001} : f32[B, 4, 8, 8]
  %2 = relu(%1) : f32[B, 4, 8, 8]
  %3 = max_pool2d(%2) {kernel = [2], stride = [2]} : f32[B, 4, 4, 4]
  return %3
}
"""

# f32 batch norm runs channels-last as a multiply-add by per-channel scale and shift ([C], which
# broadcasts along NHWC's last axis), so the relu after it does too.
BATCH_NORM_EXPECTED = """\
graph @Net(%x: f32[B, 2, 8, 8], %w: param f32[4, 2, 3, 3] = zeros(), %m: param f32[4] = zeros(), \
%v: param f32[4] = ones(), %g: param f32[4] = ones(), %b: param f32[4] = zeros()) -> (f32[B, 4, 4, 4]) {
  %0 = conv2d(%x, %w) {stride = [1, 1], padding = [1], dilation = [1, 1], groups = 1} : f32[B, 4, 8, 8]
  %1 = transpose(%0) {perm = [0, 2, 3, 1]} : f32[B, 8, 8, 4]
  %2 = constant() {value = array<0.0010000000474974513>, dtype = f32} : f32[]
  %3 = add(%v, %2) : f32[4]
  %4 = rsqrt(%3) : f32[4]
  %5 = mul(%g, %4) : f32[4]
  %6 = mul(%m, %5) : f32[4]
  %7 = sub(%b, %6) : f32[4]
  %8 = mul(%1, %5) : f32[B, 8, 8, 4]
  %9 = add(%8, %7) : f32[B, 8, 8, 4]
  %10 = relu(%9) : f32[B, 8, 8, 4]
  %11 = transpose(%10) {perm = [0, 3, 1, 2]} : f32[B, 4, 8, 8]
  %12 = max_pool2d(%11) {kernel = [2], stride = [2], padding = [0, 0]} : f32[B, 4, 4, 4]
  return %12
}
"""


def test_golden_batch_norm() -> None:
    assert after(BATCH_NORM, "layout", "dce", layout="NHWC") == BATCH_NORM_EXPECTED


def test_targets_keep_nchw_unless_asked() -> None:
    for target in ("torch", "jax", "tf", "mindspore"):
        assert after(BEFORE, "layout", target=target_info(target)) == after(BEFORE)


def test_a_target_that_prefers_nhwc_gets_it_without_being_asked() -> None:
    """The preference is the target's data (`Target.layout`), read through `PassContext.target`."""
    prefers = TargetInfo("nhwc-target", layout="NHWC")
    assert after(BEFORE, "layout", "dce", target=prefers) == after(BEFORE, "layout", "dce", layout="NHWC")
    assert after(BEFORE, "layout", "dce", target=prefers) != after(BEFORE, "layout", "dce")
    with pytest.raises(ShipeiError, match="unknown layout 'NCWH'"):
        after(BEFORE, "layout", layout="NCWH")


def test_frozen_weights_fold_the_bias_transpose() -> None:
    import numpy as np

    weights = {"w1": np.zeros((4, 2, 3, 3), np.float32), "b1": np.arange(4, dtype=np.float32),
               "w2": np.zeros((4, 4, 3, 3), np.float32)}
    out = after(BEFORE, "layout", "freeze", "dce", weights=weights, frozen=True, layout="NHWC")
    assert "reshape(%b1" not in out and weights["b1_transpose"].shape == (1, 1, 1, 4)


def test_idempotent() -> None:
    assert idempotent(BEFORE, "layout", "dce", layout="NHWC")


@given(graphs(ops=["conv2d", "max_pool2d", "avg_pool2d", "relu", "add", "mul", "neg", "reshape", "batch_norm"],
              max_nodes=8, dtypes=["f32"]))
def test_preserves_meaning(graph) -> None:
    assert_preserves(graph, ["layout"], layout="NHWC")
