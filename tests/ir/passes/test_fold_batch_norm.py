"""fold-batch-norm: conv2d / linear followed by inference batch_norm, folded into new weights."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pass_testing import after, assert_preserves, assert_same_outputs, idempotent, run
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.parser import parse_ir
from shipei.ir.types import DType, Sym, TensorType

from shipei.testing import graphs

BEFORE = """\
graph @G(%x: f32[B, 1, 4, 4], %conv.weight: param f32[2, 1, 1, 1] = ones(), %conv.bias: param f32[2] = zeros(), \
%bn.mean: buffer f32[2] = zeros(), %bn.var: buffer f32[2] = ones(), %bn.weight: param f32[2] = ones(), \
%bn.bias: param f32[2] = zeros()) -> (f32[B, 2, 4, 4]) {
  %0 = conv2d(%x, %conv.weight) : f32[B, 2, 4, 4]
  %1 = reshape(%conv.bias) {shape = [2, 1, 1]} : f32[2, 1, 1]
  %2 = add(%0, %1) : f32[B, 2, 4, 4]
  %3 = batch_norm(%2, %bn.mean, %bn.var, %bn.weight, %bn.bias) {eps = 0.0} : f32[B, 2, 4, 4]
  %4 = relu(%3) : f32[B, 2, 4, 4]
  return %4
}
"""

WEIGHTS = {"conv.weight": np.array([1.0, 2.0]).reshape(2, 1, 1, 1), "conv.bias": np.array([0.5, -1.0]),
           "bn.mean": np.array([1.0, 2.0]), "bn.var": np.array([4.0, 0.25]), "bn.weight": np.array([1.0, 3.0]),
           "bn.bias": np.array([0.0, 0.5])}

# scale = weight / sqrt(var) = [0.5, 6]: W' = [0.5, 12], b' = (bias - mean) * scale + bn.bias = [-0.25, -17.5]
EXPECTED = """\
graph @G(%x: f32[B, 1, 4, 4], %conv.folded_weight: param f32[2, 1, 1, 1] = zeros(), \
%conv.folded_bias: param f32[2] = zeros()) -> (f32[B, 2, 4, 4]) {
  %0 = conv2d(%x, %conv.folded_weight, %conv.folded_bias) {stride = [1, 1], padding = [0, 0], dilation = [1, 1], \
groups = 1} : f32[B, 2, 4, 4]
  %1 = relu(%0) : f32[B, 2, 4, 4]
  return %1
}
"""

# Without frozen weights: the same fold, written over the params for the program to compute at load.
AT_LOAD = """\
graph @G(%x: f32[B, 1, 4, 4], %conv.weight: param f32[2, 1, 1, 1] = ones(), %conv.bias: param f32[2] = zeros(), \
%bn.mean: buffer f32[2] = zeros(), %bn.var: buffer f32[2] = ones(), %bn.weight: param f32[2] = ones(), \
%bn.bias: param f32[2] = zeros()) -> (f32[B, 2, 4, 4]) {
  %0 = reshape(%conv.bias) {shape = [2, 1, 1]} : f32[2, 1, 1]
  %1 = constant() {value = array<0.0>, dtype = f32} : f32[]
  %2 = add(%bn.var, %1) : f32[2]
  %3 = rsqrt(%2) : f32[2]
  %4 = mul(%bn.weight, %3) : f32[2]
  %5 = reshape(%0) {shape = [2]} : f32[2]
  %6 = sub(%bn.mean, %5) : f32[2]
  %7 = mul(%6, %4) : f32[2]
  %8 = sub(%bn.bias, %7) : f32[2]
  %9 = reshape(%4) {shape = [2, 1, 1, 1]} : f32[2, 1, 1, 1]
  %10 = mul(%conv.weight, %9) : f32[2, 1, 1, 1]
  %11 = conv2d(%x, %10, %8) {stride = [1, 1], padding = [0, 0], dilation = [1, 1], groups = 1} : f32[B, 2, 4, 4]
  %12 = relu(%11) : f32[B, 2, 4, 4]
  return %12
}
"""


def _weights() -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32) for k, v in WEIGHTS.items()}


def test_golden() -> None:
    weights = _weights()
    assert after(BEFORE, "fold-batch-norm", "dce", weights=weights, frozen=True) == EXPECTED
    np.testing.assert_allclose(weights["conv.folded_weight"].reshape(-1), [0.5, 12.0])
    np.testing.assert_allclose(weights["conv.folded_bias"], [-0.25, -17.5])
    assert set(weights) == {"conv.folded_weight", "conv.folded_bias"}


def test_idempotent() -> None:
    assert idempotent(BEFORE, "fold-batch-norm", "dce", weights=_weights(), frozen=True)


def test_without_frozen_weights_it_folds_at_load() -> None:
    """The params stay the user's; the program computes the folded ones (see codegen.prepare)."""
    assert after(BEFORE, "fold-batch-norm", "dce", weights=_weights()) == AT_LOAD
    assert idempotent(BEFORE, "fold-batch-norm", "dce", weights=_weights())


def test_a_training_graph_keeps_its_batch_norm() -> None:
    """Training normalizes by the batch's statistics, which no fold knows."""
    out, _ = run(parse_ir(BEFORE), ["fold-batch-norm"], _weights(), frozen=False, training=True)
    assert "batch_norm" in {n.op for n in out.nodes}


def test_a_conv_read_elsewhere_is_not_folded() -> None:
    text = BEFORE.replace("-> (f32[B, 2, 4, 4])", "-> (f32[B, 2, 4, 4], f32[B, 2, 4, 4])").replace(
        "return %4", "return %4, %0")
    assert "batch_norm" in after(text, "fold-batch-norm", weights=_weights(), frozen=True)


def _layer(kind: str, bias: bool, channels: int, data) -> tuple[Graph, dict[str, np.ndarray]]:
    g = Graph("Layer")
    b = Builder(g)
    init = Init("zeros")
    if kind == "conv":
        x = b.input("x", TensorType(DType.f32, (Sym.named("B"), 2, 5, 5)))
        w = b.add_param("layer.weight", TensorType(DType.f32, (channels, 2, 3, 3)), init)
        y = b("conv2d", x, w, padding=(1,))
        if bias:
            y = b("add", y, b("reshape", b.add_param("layer.bias", TensorType(DType.f32, (channels,)), init),
                                shape=(channels, 1, 1)))
    else:
        x = b.input("x", TensorType(DType.f32, (Sym.named("B"), 6)))
        w = b.add_param("layer.weight", TensorType(DType.f32, (channels, 6)), init)
        y = b("matmul", x, b("transpose", w, perm=(1, 0)))
        if bias:
            y = b("add", y, b.add_param("layer.bias", TensorType(DType.f32, (channels,)), init))
    stats = [b.add_param(f"bn.{n}", TensorType(DType.f32, (channels,)), init) for n in ("mean", "var", "w", "b")]
    g.outputs = [b("batch_norm", y, *stats, eps=1e-5)]
    arrays = st.lists(st.floats(-2, 2, width=32), min_size=channels, max_size=channels)
    weights = {p.name: np.asarray(data.draw(arrays) if p.type.rank == 1 else
                                  np.random.default_rng(0).uniform(-1, 1, p.shape), np.float32) for p in g.params}
    weights["bn.var"] = np.abs(weights["bn.var"]) + 0.1
    return g, weights


@given(st.sampled_from(["conv", "linear"]), st.booleans(), st.integers(1, 4), st.booleans(), st.data())
def test_folded_layers_compute_the_same(kind: str, bias: bool, channels: int, frozen: bool, data) -> None:
    graph, weights = _layer(kind, bias, channels, data)
    out, ctx = run(graph, ["fold-batch-norm", "dce"], weights, frozen=frozen)
    assert [n.op for n in out.nodes if n.op == "batch_norm"] == []
    x = np.random.default_rng(1).standard_normal((3,) + tuple(graph.inputs[0].shape[1:])).astype(np.float32)
    assert_same_outputs(graph, weights, out, ctx.weights, [x])


@given(graphs(max_nodes=8))
def test_preserves_meaning(graph) -> None:
    assert_preserves(graph, ["fold-batch-norm"])


def test_round_trips_through_text() -> None:
    weights = _weights()
    text = after(BEFORE, "fold-batch-norm", "dce", weights=weights, frozen=True)
    assert str(parse_ir(text)) == text
