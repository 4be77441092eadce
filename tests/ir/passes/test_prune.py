"""prune: magnitude pruning, unstructured and by whole output channels, with a sparsity knob."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pass_testing import after, assert_same_outputs, run
from shipei.ir.errors import ShipeiError
from shipei.ir.init import init_params
from shipei.ir.parser import parse_ir
from shipei.ir.passes.prune import prune_array

from shipei.testing import graphs, make_inputs

LINEAR = """\
graph @Linear(%x: f32[B, 4], %fc.weight: param f32[2, 4] = zeros(), %fc.bias: param f32[2] = zeros()) \
-> (f32[B, 2]) {
  %0 = transpose(%fc.weight) {perm = [1, 0]} : f32[4, 2]
  %1 = matmul(%x, %0) : f32[B, 2]
  %2 = add(%1, %fc.bias) : f32[B, 2]
  return %2
}
"""


def _weights() -> dict[str, np.ndarray]:
    return {"fc.weight": np.array([[1, -0.5, 0.25, 0.0], [2, 1, -3, 0.5]], np.float32),
            "fc.bias": np.array([0.1, 0.2], np.float32)}


def test_unstructured_zeroes_the_smallest_weights_and_keeps_the_graph() -> None:
    weights = _weights()
    ctx_options = {"sparsity": 0.5, "prune_min_elements": 1}
    assert after(LINEAR, "prune", weights=weights, frozen=True, **ctx_options) == after(LINEAR)
    assert weights["fc.weight"].tolist() == [[1, 0, 0, 0], [2, 1, -3, 0]]
    assert weights["fc.bias"].tolist() == pytest.approx([0.1, 0.2])  # biases are not layer weights


def test_structured_zeroes_whole_output_channels() -> None:
    weights = _weights()
    after(LINEAR, "prune", weights=weights, frozen=True, sparsity=0.5, structured=True, prune_min_elements=1)
    assert weights["fc.weight"].tolist() == [[0, 0, 0, 0], [2, 1, -3, 0.5]]


def test_report_and_knob_checks() -> None:
    _, ctx = run(parse_ir(LINEAR), ["prune"], _weights(), sparsity=0.25, prune_min_elements=1)
    report = ctx.results.prune_report["fc.weight"]
    assert (report.zeros, report.total, report.dense_bytes) == (2, 8, 32)  # the zero weight and 0.25
    assert report.sparse_bytes == 6 * 4 + 1  # six float values and a one-byte bitmap
    with pytest.raises(ShipeiError, match="sparsity must be between 0 and 1"):
        after(LINEAR, "prune", weights=_weights(), frozen=True, sparsity=1.5)


@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.floats(-9, 9, width=32)),
       st.floats(0, 1), st.sampled_from([None, 0, 1]))
def test_sparsity_is_met_by_the_smallest(w: np.ndarray, sparsity: float, axis: int | None) -> None:
    out = prune_array(w, sparsity, axis)
    if axis is None:
        k = int(round(sparsity * w.size))
        assert np.count_nonzero(out) <= w.size - k
        kept = np.abs(w[out != 0])
        if k and kept.size:
            assert kept.min() >= np.sort(np.abs(w), axis=None)[k - 1]
    else:
        dropped = np.all(np.moveaxis(out, axis, 0).reshape(w.shape[axis], -1) == 0, axis=1)
        assert dropped.sum() >= int(round(sparsity * w.shape[axis]))
    assert np.all((out == 0) | (out == w))


@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.floats(-9, 9, width=32)),
       st.floats(0, 1), st.sampled_from([None, 0, 1]))
def test_pruning_twice_is_pruning_once(w: np.ndarray, sparsity: float, axis: int | None) -> None:
    once = prune_array(w, sparsity, axis)
    np.testing.assert_array_equal(prune_array(once, sparsity, axis), once)


@given(graphs(ops=["matmul", "conv2d", "add", "relu", "transpose"], max_nodes=6, dtypes=["f32"]))
def test_no_sparsity_changes_nothing(graph) -> None:
    weights = init_params(graph)
    out, ctx = run(graph, ["prune"], weights, sparsity=0.0, prune_min_elements=1)
    assert all(np.array_equal(ctx.weights[k], weights[k]) for k in weights)
    assert_same_outputs(graph, weights, out, ctx.weights, list(make_inputs(graph, 0)))
