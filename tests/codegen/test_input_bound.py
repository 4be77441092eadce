"""The torch program's guarded oneDNN graph (`GUARDED_GRAPH`): the fuser's own forms of relu, max
pool and exp, which drop NaN, run only for inputs within the bound `input_bound` proves from the
weights: there no value can be NaN or overflow. The bound rules are checked here against values
forward computes; the graphs' choice and results in test_onednn_graph.py and test_non_finite.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from shipei.ir.inputs import random_inputs

import shipei

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: One model of the ops the bound rules cover, every output a function of an input.
COVERED = """
model M() {
    c = Conv2d(4, 4, 3, padding=1)
    bn = BatchNorm2d(4)
    fc = Linear(16, 16)
    ln = LayerNorm(16)

    forward(img: f32[B, 4, 8, 8], x: f32[B, 16]) -> (f32[B, 4, 4, 4], f32[B, 4], f32[B, 16], f32[B, 16], f32[B, 16],
                                                      f32[B, 16], f32[B, 4, 4, 4]) {
        p = relu(bn(c(img)))
        y = fc(x)
        return max_pool2d(p, 2, stride=2), mean(silu(c(img)), axis=[2, 3]), gelu(ln(y)), softmax(y, axis=-1) * 3.0,
               log_softmax(y, axis=-1), exp(tanh(y)) - x / 2.0, avg_pool2d(sigmoid(p) + p, 2, stride=2)
    }
}
"""


def _load(source, **kwargs):
    compiled = shipei.compile(source, "torch", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compiled, compiled.load(device="cpu")


def _output_bounds(exe, tensors, bound: float) -> list[torch.Tensor]:
    """forward run on bounds: each input's elements `bound`, each output's what `_Bound` gives."""
    bounds = [torch.full(t.shape, bound, dtype=torch.float64).as_subclass(exe.module._Bound) for t in tensors]
    with torch.no_grad():
        out = exe._model(*bounds)
    return [o.as_subclass(torch.Tensor) for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("source", [COVERED, EXAMPLES / "cnn.sp"], ids=["covered", "cnn"])
def test_every_output_lies_within_the_bounds_forward_computes_on_bounds(source) -> None:
    """Inputs anywhere within +-L, L the bound proven: each output within its bound, and finite."""
    compiled, exe = _load(source)
    assert "GUARDED_GRAPH = True" in compiled.source
    x = [torch.from_numpy(a) for a in random_inputs(compiled.ir, seed=0, dims={"B": 6})]
    bound = exe.module.input_bound(exe._model, x)
    assert bound is not None
    ceilings = _output_bounds(exe, x, bound)
    rng = np.random.default_rng(0)
    for scale in (1.0, bound ** 0.5, bound):
        for _ in range(3):
            inputs = [(rng.uniform(-1, 1, t.shape) * scale).astype(np.float32) for t in x]
            for got, ceiling in zip(exe.run(*inputs), ceilings, strict=True):
                assert np.isfinite(got).all()
                assert (np.abs(got) <= ceiling.numpy() * (1 + 1e-5)).all(), scale


def test_an_op_the_rules_do_not_cover_leaves_the_graph_that_keeps_nan() -> None:
    """log makes NaN of a finite negative value: no bound, so every input takes the exact graph."""
    compiled, exe = _load("""
    model M() {
        c = Conv2d(2, 2, 3, padding=1)
        forward(x: f32[B, 2, 4, 4]) -> f32[B, 2, 4, 4] { return relu(log(c(x))) }
    }
    """)
    x = random_inputs(compiled.ir, seed=0, dims={"B": 3})
    got = exe.run(*x)
    (entry,) = exe.module._GRAPHS[exe._model].values()
    assert entry.bound is None and list(entry.forward) == [False]
    want = shipei.reference(compiled.ir, x, compiled.weights)
    assert np.isnan(want[0]).any() and np.array_equal(np.isnan(got[0]), np.isnan(want[0]))


def test_a_bound_cast_to_another_dtype_leaves_the_model_unbounded() -> None:
    """A bound cast to an integer and back would read as the value it bounds (here: a divisor of
    0 for inputs below 1, so y - y is inf - inf): a cast of bounds leaves the model unbounded."""
    compiled, exe = _load("""
    model M() {
        c = Conv2d(2, 2, 3, padding=1)
        forward(x: f32[B, 2, 4, 4]) -> f32[B, 2, 4, 4] {
            y = c(x) / cast(cast(x, i32), f32)
            return relu(y - y)
        }
    }
    """)
    x = [(a * 0.5).astype(np.float32) for a in random_inputs(compiled.ir, seed=0, dims={"B": 3})]
    got = exe.run(*x)
    (entry,) = exe.module._GRAPHS[exe._model].values()
    assert entry.bound is None
    want = shipei.reference(compiled.ir, x, compiled.weights)
    assert np.isnan(want[0]).any() and np.array_equal(np.isnan(got[0]), np.isnan(want[0]))


def test_only_float32_graphs_are_guarded() -> None:
    """The bounds are checked against float32's range: a float16 convolution overflows far sooner."""
    source = """
    model M() {{
        param w: {0}[2, 2, 3, 3] = uniform(low=-1.0, high=1.0)
        forward(x: {0}[B, 2, 4, 4]) -> {0}[B, 2, 4, 4] {{ return relu(conv2d(x, w, padding=[1, 1])) }}
    }}
    """
    assert "GUARDED_GRAPH = True" in shipei.compile(source.format("f32"), "torch").source
    assert "GUARDED_GRAPH = False" in shipei.compile(source.format("f16"), "torch").source


def test_the_bound_is_proven_for_the_weights_as_they_are() -> None:
    """Weights 2^40 times larger: a bound 2^40 times tighter at least, after a rebind."""
    compiled, exe = _load(EXAMPLES / "cnn.sp")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 2})
    exe.run(*x)
    (before,) = exe.module._GRAPHS[exe._model].values()
    exe.load_weights({k: (v * 2.0 ** 40).astype(v.dtype) if k.endswith("weight") and v.ndim == 4 else v
                      for k, v in compiled.weights.items()})
    exe.run(*x)
    (after,) = exe.module._GRAPHS[exe._model].values()
    assert before.bound is not None and (after.bound is None or after.bound <= before.bound / 2.0 ** 40)


@pytest.mark.parametrize(("example", "guarded"), [("cnn", True), ("mlp", False), ("transformer", False)])
def test_convolutional_graphs_of_float_inputs_are_guarded(example: str, guarded: bool) -> None:
    """The mlp's relus cost less than the check; the transformer's tokens are integers."""
    assert f"GUARDED_GRAPH = {guarded}" in shipei.compile(EXAMPLES / f"{example}.sp", "torch").source
