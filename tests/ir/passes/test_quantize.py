"""quantize: int8 per-channel symmetric weights; the graph computes what the float graph computes
with the dequantized weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pass_testing import after, assert_same_outputs, idempotent, run
from shipei.ir.init import init_params
from shipei.ir.inputs import random_inputs
from shipei.ir.interpreter import interpret
from shipei.ir.parser import parse_ir
from shipei.ir.passes.manager import pipeline
from shipei.ir.passes.quantize import quantize_array, summary
from shipei.ir.passes.rewrite import layer_weights
from shipei.ir.tolerance import compare
from shipei.ir.types import DType

import shipei
from shipei.testing import available_targets, graphs, make_inputs
from shipei.testing.lowering import run_target

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

BEFORE = """\
graph @Linear(%x: f32[B, 4], %i: i64[B], %fc.weight: param f32[2, 4] = zeros(), \
%emb: param f32[3, 4] = zeros()) -> (f32[B, 2], f32[B, 4]) {
  %0 = transpose(%fc.weight) {perm = [1, 0]} : f32[4, 2]
  %1 = matmul(%x, %0) : f32[B, 2]
  %2 = gather(%emb, %i) : f32[B, 4]
  return %1, %2
}
"""

# One scale per output channel (fc.weight's rows, emb's rows); the gather dequantizes only the
# rows it reads.
EXPECTED = """\
graph @Linear(%x: f32[B, 4], %i: i64[B], %fc.weight_q: buffer i32[2, 4] = zeros(), \
%fc.weight_scale: param f32[2, 1] = zeros(), %emb_q: buffer i32[3, 4] = zeros(), \
%emb_scale: param f32[3, 1] = zeros()) -> (f32[B, 2], f32[B, 4]) {
  %0 = cast(%fc.weight_q) {dtype = f32} : f32[2, 4]
  %1 = mul(%0, %fc.weight_scale) : f32[2, 4]
  %2 = transpose(%1) {perm = [1, 0]} : f32[4, 2]
  %3 = matmul(%x, %2) : f32[B, 2]
  %4 = gather(%emb_q, %i) {axis = 0} : i32[B, 4]
  %5 = cast(%4) {dtype = f32} : f32[B, 4]
  %6 = gather(%emb_scale, %i) {axis = 0} : f32[B, 1]
  %7 = mul(%5, %6) : f32[B, 4]
  return %3, %7
}
"""

# Where the target multiplies int8 weights, the scale moves past the matmul.
INT8_MATMUL = """\
  %0 = cast(%fc.weight_transpose_q) {dtype = f32} : f32[4, 2]
  %1 = matmul(%x, %0) : f32[B, 2]
  %2 = reshape(%fc.weight_transpose_scale) {shape = [2]} : f32[2]
  %3 = mul(%1, %2) : f32[B, 2]
"""


def _weights() -> dict[str, np.ndarray]:
    return {"fc.weight": np.array([[1, -0.5, 0.25, 0.0], [2, 1, -1, 0.5]], np.float32),
            "emb": np.arange(12, dtype=np.float32).reshape(3, 4)}


def test_golden() -> None:
    weights = _weights()
    assert after(BEFORE, "quantize", "dce", weights=weights, frozen=True, quantize_min_elements=1) == EXPECTED
    assert weights["fc.weight_q"].dtype == np.int8 and weights["fc.weight_q"].tolist() == [
        [127, -64, 32, 0], [127, 64, -64, 32]]
    np.testing.assert_allclose(weights["fc.weight_scale"].reshape(-1), [1 / 127, 2 / 127])


def test_idempotent() -> None:
    """A quantized weight is read through its dequantize, and a gathered scale has one value per
    row, which would not shrink: a second run finds nothing to do."""
    weights = _weights()
    assert idempotent(BEFORE, "quantize", "dce", weights=weights, frozen=True, quantize_min_elements=1)
    assert set(weights) == {"fc.weight_q", "fc.weight_scale", "emb_q", "emb_scale"}


def test_int8_matmul_folds_the_scale_past_the_matmul() -> None:
    out = after(BEFORE, "freeze", "quantize", "dce", weights=_weights(), frozen=True, quantize_min_elements=1,
                int8_matmul=True)
    assert INT8_MATMUL in out


def test_freeze_leaves_the_dequantize_alone() -> None:
    weights = _weights()
    once = after(BEFORE, "quantize", "dce", weights=weights, frozen=True, quantize_min_elements=1)
    assert after(once, "freeze", "dce", weights=weights, frozen=True) == once  # not widened back to f32


def test_report_gives_each_weights_error_and_bytes() -> None:
    _, ctx = run(parse_ir(BEFORE), ["quantize"], _weights(), quantize_min_elements=1)
    report = ctx.results.quantize_report
    assert (report["fc.weight"].dense_bytes, report["fc.weight"].stored_bytes) == (32, 8 + 2 * 4)
    assert (report["emb"].dense_bytes, report["emb"].stored_bytes) == (48, 12 + 3 * 4)
    # row 2's 1.0 is 63.5 steps of 2/127: off by half a step (1/127), over the largest |w|, 2
    assert report["fc.weight"].error == pytest.approx(1 / 127 / 2)
    assert report["emb"].error < report["fc.weight"].error
    assert summary(report) == ("quantize: 2 weight(s) to int8 per channel, 0.1 KiB -> 0.0 KiB; "
                               f"largest relative error {report['fc.weight'].error:.2g} (fc.weight)")


def test_small_weights_stay_float() -> None:
    assert after(BEFORE, "quantize", weights=_weights(), frozen=True) == after(BEFORE)


@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 5)),
              elements=st.floats(-100, 100, width=32)), st.integers(0, 1))
def test_dequantized_weights_are_within_half_a_step(w: np.ndarray, axis: int) -> None:
    q, scale = quantize_array(w, axis)
    assert q.dtype == np.int8 and np.abs(q).max(initial=0) <= 127
    assert np.all(np.abs(q * scale - w) <= scale / 2 + 1e-6 * np.abs(w))


@given(graphs(ops=["matmul", "conv2d", "add", "relu", "transpose", "gather", "mul"], max_nodes=8, dtypes=["f32",
                                                                                                       "i64"]))
def test_computes_the_float_graph_with_dequantized_weights(graph) -> None:
    weights = init_params(graph)
    out, ctx = run(graph, ["quantize"], weights, quantize_min_elements=1)
    dequantized = dict(weights)
    for p, axis in layer_weights(graph, tables=True).items():
        if weights[p.name].size < 2 * weights[p.name].shape[axis]:
            continue  # one value per channel: left float
        q, scale = quantize_array(weights[p.name], axis)
        dequantized[p.name] = (q * scale).astype(np.float32)
    assert_same_outputs(graph, dequantized, out, ctx.weights, list(make_inputs(graph, 0)))


def test_a_table_scaled_along_another_axis_is_dequantized_whole_before_the_gather() -> None:
    """Found by the `long` profile: w1 is a conv weight (scaled per output channel, axis 0) and
    a table gathered along axis 2; gathering its [1, 1, 1, 1] scale with index 1 was out of range."""
    graph = shipei.parse("""
model G() {
    param w0: f32[1, 1, 3, 3] = uniform(low=-1.0, high=1.0)
    param w1: f32[1, 1, 2, 1] = uniform(low=-1.0, high=1.0)
    forward(x0: i64[]) -> (f32[1, 1, 2, 3], f32[1, 1, 1]) {
        return conv2d(w0, w1), gather(w1, x0, axis=2)
    }
}
""")
    weights = init_params(graph)
    out, ctx = run(graph, ["quantize"], weights, quantize_min_elements=1)
    q, scale = quantize_array(weights["w1"], 0)
    dequantized = {**weights, "w1": (q * scale).astype(np.float32)}  # w0 is conv2d's input, left float
    assert_same_outputs(graph, dequantized, out, ctx.weights, [np.array(1)])


@pytest.mark.parametrize("target", available_targets())
def test_quantized_examples_run_on_every_target(target: str) -> None:
    """The int8 weights are stored as int8 and widened to i32 by each target when it loads them."""
    for name in ("mlp.sp", "transformer.sp"):
        graph = shipei.parse(EXAMPLES / name)
        compiled = shipei.compile(graph, target, passes=pipeline(3) + ["quantize", "dce"], freeze=True)
        assert any(w.dtype == np.int8 for w in compiled.weights.values())
        x = random_inputs(graph, seed=1, dims={"B": 2, "T": 8})
        got = run_target(compiled.ir, target, x, compiled.weights)[0]
        want = interpret(compiled.ir, x, compiled.weights, "f64")[0]
        assert compare(got, want, DType.f32).ok, f"{name} on {target}"
