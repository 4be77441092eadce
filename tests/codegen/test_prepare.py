"""codegen.prepare: what a program computes from its weights alone, computed when they are bound.

Every target's program for the example ResNet folds its batch norms when `load` binds weights,
gives the reference's results for those weights, and again for new weights bound later.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from shipei.codegen.prepare import prepare
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.inputs import random_inputs
from shipei.ir.tolerance import compare
from shipei.ir.types import DType, Sym, TensorType

import shipei
from shipei.testing import available_targets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _agrees(exe, compiled: shipei.Compiled, x: list[np.ndarray], weights: dict[str, np.ndarray]) -> np.ndarray:
    got = exe.run(*x)[0]
    worst = compare(got, shipei.reference(compiled.ir, x, weights)[0], DType.f32)
    assert worst.ok, worst
    return got


@pytest.mark.parametrize("target", available_targets())
def test_batch_norms_fold_when_weights_are_bound_and_again_when_rebound(target: str) -> None:
    compiled = shipei.compile(EXAMPLES / "cnn.sp", target)
    assert "batch_norm" in {n.op for n in shipei.parse(EXAMPLES / "cnn.sp").nodes}
    per_call = prepare(compiled.ir)
    assert "batch_norm" not in {n.op for n in per_call.nodes}
    assert [p.name for p in per_call.derived.stored] == [p.name for p in compiled.ir.params]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exe = compiled.load(device="cpu")
    assert [name for name, _, _ in exe.module.PARAMS] == [p.name for p in compiled.ir.params]  # loads by name
    x = random_inputs(compiled.ir, seed=0, dims={"B": 3})
    before = _agrees(exe, compiled, x, compiled.weights)
    rng = np.random.default_rng(1)
    rebound = {name: (np.abs(w) + 0.5 if "running_var" in name else w + rng.normal(0, 0.1, w.shape)).astype(w.dtype)
               if w.dtype.kind == "f" else w for name, w in compiled.weights.items()}
    exe.load_weights(rebound)
    after = _agrees(exe, compiled, x, rebound)
    assert not np.allclose(before, after)


def _graph(computed) -> Graph:
    """x [B, 4] plus what `computed(builder, w, v)` makes of params w [4] and v [4, 1]."""
    g = Graph("G")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (Sym.named("B"), 4)))
    w = b.add_param("w", TensorType(DType.f32, (4,)), Init("zeros"))
    v = b.add_param("v", TensorType(DType.f32, (4, 1)), Init("zeros"))
    g.outputs = computed(b, x, w, v)
    return g


def test_a_value_of_the_weights_alone_is_derived_and_the_rest_stays() -> None:
    g = _graph(lambda b, x, w, v: [b("add", x, b("neg", b("mul", w, w)))])
    split = prepare(g)
    assert [n.op for n in split.nodes] == ["add"]
    assert [n.op for n in split.derived.graph.nodes] == ["mul", "neg"]
    assert [p.name for p in split.params] == ["w_neg"] and split.params[0].param.buffer
    assert [p.name for p in split.derived.stored] == ["w", "v"]
    exe = shipei.compile(g, "torch", opt=0).load(device="cpu")
    exe.load_weights({"w": np.arange(4, dtype=np.float32), "v": np.ones((4, 1), np.float32)})
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(exe.run(x)[0], x - np.arange(4) ** 2)


def test_a_value_larger_than_its_weights_stays_in_the_model() -> None:
    """v * w is [4, 4] from 8 stored elements: a broadcast costs less than storing it."""
    g = _graph(lambda b, x, w, v: [b("matmul", x, b("mul", v, w))])
    assert prepare(g) is g


def test_an_output_stays_in_the_model() -> None:
    """The program returns tensors it computed, never a param of its own."""
    g = _graph(lambda b, x, w, v: [b("neg", w), b("add", x, w)])
    assert prepare(g) is g


def test_an_op_numpy_does_not_spell_here_stays_in_the_model() -> None:
    g = _graph(lambda b, x, w, v: [b("add", b("cast", x, dtype=DType.f64),
                                     b("cast", b("reshape", v, shape=(4,)), dtype=DType.f64))])
    split = prepare(g)
    assert [n.op for n in split.derived.graph.nodes] == ["reshape"]
    assert [n.op for n in split.nodes] == ["cast", "cast", "add"]


def test_a_training_program_keeps_its_params_and_batch_norms() -> None:
    """Gradients are by the user's params, and training normalizes by the batch's statistics."""
    compiled = shipei.compile(EXAMPLES / "cnn.sp", "torch", pass_options={"training": True})
    assert "def prepare_weights" not in compiled.source
    assert "F.batch_norm" in compiled.source


@pytest.mark.parametrize("target", available_targets())
def test_a_derived_scalar_stays_a_scalar(target: str) -> None:
    """-w of a 0-d param is derived at load (found by the fuzzer: it came out [1], not [])."""
    source = """
    model G() {
        param w: f64[] = uniform(low=-1.0, high=1.0)
        forward() -> (f64[]) {
            return erf(-w)
        }
    }
    """
    compiled = shipei.compile(source, target, opt=0)
    assert prepare(compiled.ir).params[0].type.shape == ()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = compiled.load(device="cpu").run()[0]
    assert got.shape == ()
    np.testing.assert_allclose(got, shipei.reference(compiled.ir, [], compiled.weights)[0], rtol=1e-12)
