"""NaN and infinities through every target, against the reference (docs/known-differences.md, "NaN
and infinities"): the fuzzer draws finite inputs, so these paths are tested here. Fused kernels
are where they went wrong: oneDNN's relu, exp and max pools (torch), YNNPACK's max in XLA:CPU's
pools and fused reductions (jax, at sizes it hands YNNPACK: the 32x32 mean), MindSpore's softmax,
max and min reductions and max pool."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from non_finite import with_non_finite
from shipei.codegen import TARGETS
from shipei.ir.inputs import random_inputs
from shipei.ir.tolerance import compare
from shipei.ir.types import DType

import shipei

SOURCE = """
model M() {
    fc = Linear(16, 16)
    c = Conv2d(16, 16, 3, padding=1)

    forward(x: f32[B, 16], z: f32[B, 16], img: f32[B, 16, 8, 8], big: f32[B, 16, 32, 32]) -> (
            f32[B, 16], f32[B, 16], f32[B, 16], f32[B, 16], f32[B, 16], f32[B, 16], f32[B, 16], f32[B, 16],
            f32[B], f32[B], f32[B, 16, 8, 8], f32[B, 16, 4, 4], f32[B, 16, 4, 4], f32[B, 16], f32[B, 16],
            f32[B, 16, 16, 16], f32[B, 16]) {
        y = fc(x)
        p = c(img)
        return relu(y), exp(y), sigmoid(y), tanh(y), silu(y), relu(z), softmax(z, axis=-1), log_softmax(z, axis=-1),
               max(z, axis=[1]), min(z, axis=[1]), relu(p), max_pool2d(p, 2, stride=2),
               max_pool2d(relu(p), 2, stride=2), flatten(avg_pool2d(relu(p), 8, stride=8), start_dim=1),
               mean(relu(big), axis=[2, 3]), max_pool2d(big, 2, stride=2), max(big, axis=[2, 3])
    }
}
"""

@pytest.mark.parametrize("target", TARGETS)
def test_nan_and_infinities_come_out_as_the_reference_computes_them(target: str) -> None:
    compiled = shipei.compile(SOURCE, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exe = compiled.load(device="cpu")
        x = random_inputs(compiled.ir, seed=0, dims={"B": 6})
        exe.run(*x)  # torch traces its oneDNN graph on finite inputs; the next call runs it
        x = [with_non_finite(a, negative_row=v.name == "z") for a, v in zip(x, compiled.ir.inputs, strict=True)]
        got = exe.run(*x)
    want = shipei.reference(compiled.ir, x, compiled.weights)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert np.isnan(w).any(), f"output {i} holds no NaN: the inputs test nothing there"
        assert compare(np.asarray(g), w, DType.f32).ok, f"{target}: output {i}: {compare(np.asarray(g), w, DType.f32)}"


ATTENTION = """
model A() {
    fc = Linear(8, 8)
    forward(q: f32[B, 2, 4, 8], k: f32[B, 2, 4, 8], v: f32[B, 2, 4, 8]) -> f32[B, 2, 4, 8] {
        return attention(fc(q), k, v, scale=0.25, causal=true)
    }
}
"""


def _attention(target: str, path: str, inputs) -> tuple[np.ndarray, np.ndarray]:
    """The attention model's result on `inputs` (a function of its finite inputs) and the
    reference's; torch's on its oneDNN graph (traced on the finite inputs first) or eagerly."""
    options = {"onednn_graph": path == "graph"} if target == "torch" else {}
    compiled = shipei.compile(ATTENTION, target, options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exe = compiled.load(device="cpu")
        x = random_inputs(compiled.ir, seed=0, dims={"B": 6})
        exe.run(*x)
        x = inputs(x)
        (got,) = exe.run(*x)
    (want,) = shipei.reference(compiled.ir, x, compiled.weights)
    return np.asarray(got), want


PATHS = [(target, path) for target in TARGETS for path in (["graph", "eager"] if target == "torch" else ["-"])]


@pytest.mark.parametrize(("target", "path"), PATHS)
def test_attention_keeps_nan(target: str, path: str) -> None:
    """The reference's softmax is NaN across a row with a NaN score and its product with v NaN
    where v holds one. torch's CPU flash kernel left rows finite (its running maximum skips NaN):
    torch's program computes the reference's steps where the inputs are not finite."""
    got, want = _attention(target, path, lambda x: [with_non_finite(a) for a in x])
    assert np.isnan(want[1, 0]).all()  # the head holding the NaN
    assert compare(got, want, DType.f32).ok, f"{target}: {compare(got, want, DType.f32)}"
