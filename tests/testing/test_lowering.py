"""assert_lowering_correct: the reference against every target, failures as minimized DSL reports."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from shipei.codegen import get_target
from shipei.frontend import elaborate_source
from shipei.ir.graph import Builder, Graph
from shipei.ir.types import DType, TensorType

from shipei.testing import LoweringMismatch, assert_lowering_correct, available_targets, graphs
from shipei.testing.lowering import (
    Failure,
    minimize,
    probe_in_process,
    reference,
    run_target,
    subgraph,
    tolerance_dtype,
)

MLP = Path(__file__).resolve().parents[2] / "examples" / "mlp.sp"
CHAIN = """\
model Chain() {
    forward(x: f32[3, 4], y: f32[4]) -> f32[3, 4] {
        a = relu(x)
        b = a * y
        c = tanh(b)
        return softmax(c, axis=-1)
    }
}
"""


@pytest.fixture
def broken_mul(monkeypatch):
    """torch lowers mul as addition: a deliberately wrong rule."""
    monkeypatch.setitem(get_target("torch").rules, "mul", "{0} + {1}")


@pytest.mark.parametrize("target", available_targets())
def test_an_example_model_lowers_correctly(target):
    assert_lowering_correct(MLP, targets=[target])


def test_a_wrong_lowering_is_reported_as_a_minimized_dsl_program(broken_mul):
    with pytest.raises(LoweringMismatch) as info:
        assert_lowering_correct(CHAIN, targets=["torch"])
    err = info.value
    assert isinstance(err, AssertionError) and err.target == "torch" and err.failure.kind == "mismatch"
    assert [n.op for n in err.graph.nodes] == ["mul"]
    message = str(err)
    assert message.startswith("target 'torch' disagrees with the reference on output 0 (f32[3, 4])")
    assert "worst element at [" in message and "(f32: rtol 0.0001, atol 1e-05)" in message
    assert "minimized from 4 to 1 nodes" in message
    assert "        v0 = c0 * y" in message and "model Chain()" in message
    # The reported program and inputs reproduce the failure on their own.
    assert probe_in_process("torch")(elaborate_source(err.program), err.inputs, err.weights) is not None


def test_without_minimization_the_report_shows_the_source_and_the_seed(broken_mul):
    with pytest.raises(LoweringMismatch) as info:
        assert_lowering_correct(CHAIN, targets=["torch"], seed=7, minimize_failure=False)
    message = str(info.value)
    assert "inputs: seed 7 (shipei.testing.make_inputs(graph, 7))" in message
    assert textwrap.indent(CHAIN, "    ").rstrip() in message


def test_explicit_inputs_are_used_as_given():
    x = np.full((3, 4), -1.0, np.float32)
    assert_lowering_correct(CHAIN, targets=["torch"], inputs=[x, np.ones(4, np.float32)])


LINEAR = """\
model Linear() {
    forward(x: f32[3, 4], w: f32[2, 4], b: f32[2]) -> f32[3, 2] {
        return x @ transpose(w, [1, 0]) + b
    }
}
"""


def test_run_target_at_an_opt_level_lowers_the_optimized_graph(monkeypatch):
    """At -O2 recognize turns the matmul and add into `linear`, so only then does a broken
    linear rule show; the reference of the graph as written judges both."""
    g = elaborate_source(LINEAR)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs]
    want = reference(g, xs, {}).outputs[0]
    monkeypatch.setitem(get_target("torch").rules, "linear", "{0} @ {1}.T")  # drops the bias
    np.testing.assert_allclose(run_target(g, "torch", xs, {})[0], want, rtol=1e-5)
    assert not np.allclose(run_target(g, "torch", xs, {}, opt=2)[0], want)


def test_a_target_exception_is_a_lowering_failure(monkeypatch):
    monkeypatch.setitem(get_target("torch").rules, "tanh", "torch.no_such_function({0})")
    with pytest.raises(LoweringMismatch, match="target 'torch' raised AttributeError") as info:
        assert_lowering_correct(CHAIN, targets=["torch"])
    assert [n.op for n in info.value.graph.nodes] == ["tanh"]


def test_minimize_cuts_to_the_failing_node_and_keeps_its_inputs():
    g = elaborate_source(CHAIN)
    from shipei.testing import make_inputs

    xs, ws = make_inputs(g, 0), {}
    small = subgraph(g, xs, ws, [g.nodes[2].result], {g.nodes[1].result}, {g.nodes[1].result: np.ones((3, 4))})
    assert [n.op for n in small[0].nodes] == ["tanh"] and [v.name for v in small[0].inputs] == ["c0"]
    probe_calls = []

    def probe(graph, inputs, weights):
        probe_calls.append(len(graph.nodes))
        return Failure("fake", "error", detail="E: x") if any(n.op == "mul" for n in graph.nodes) else None

    result = minimize(g, xs, ws, Failure("fake", "error", detail="E: x"), probe)
    assert [n.op for n in result.graph.nodes] == ["mul"] and len(probe_calls) <= 10


def test_an_output_is_held_to_the_least_precise_dtype_computed_on_its_way():
    g = Graph("P")
    b = Builder(g)
    x = b.input("x", TensorType(DType.bf16, (2,)))
    y = b("cast", b("sqrt", x), dtype=DType.f64)
    z = b("cast", x, dtype=DType.f64)
    assert tolerance_dtype(y) is DType.bf16 and tolerance_dtype(z) is DType.f64


ILL_CONDITIONED = """
model G() {
    forward(x: bf16[2], y: bf16[2], w: bf16[2], b: bf16[2]) -> (bf16[2]) {
        return layer_norm(x + y, w, b, eps=1e-05)
    }
}
"""


def test_inputs_whose_16_bit_rounding_decides_the_output_are_ill_conditioned():
    """A layer norm of two bf16 values one ulp apart: half an ulp of rounding in `x + y` flips its
    output, so these inputs cannot judge a lowering. Two values far apart are fine."""
    graph = elaborate_source(ILL_CONDITIONED, "ill.sp")
    ones, zeros = np.ones(2, np.float32), np.zeros(2, np.float32)
    near = reference(graph, [np.array([1.0, 1.0078125], np.float32), zeros, ones, zeros], {})
    far = reference(graph, [np.array([1.0, 3.0], np.float32), zeros, ones, zeros], {})
    assert near.problem is not None and near.problem.startswith("ill-conditioned")
    assert far.problem is None


def test_f32_inputs_whose_rounding_decides_the_output_are_ill_conditioned():
    """`sin` of an f32 value near 314, where half an ulp (1.5e-5) moves sin by more than its
    tolerance (1.3e-5 at sin = 0.03): jax and tf were held to that by the fuzzer. Near 2.25 it
    is fine."""
    graph = elaborate_source("model G() { forward(x: f32[1]) -> (f32[1]) { return sin(x * x) } }", "sin.sp")
    near = reference(graph, [np.array([17.7254], np.float32)], {})
    far = reference(graph, [np.array([1.5], np.float32)], {})
    assert near.problem is not None and near.problem.startswith("ill-conditioned")
    assert far.problem is None


def test_a_layer_norm_with_eps_0_of_a_constant_row_is_ill_conditioned():
    """0/0: the reference's two-pass variance of three 0.1s is a rounding residue (so +-1 comes
    out), torch's Welford variance is exactly 0 (so NaN does). A row of distinct values is fine."""
    graph = elaborate_source("""
model G() {
    forward(x: f64[3], w: f64[3], b: f64[3]) -> (f64[3]) {
        return layer_norm(x * w, w, b, eps=0.0)
    }
}""", "ln.sp")
    ones, zeros = np.ones(3), np.zeros(3)
    constant = reference(graph, [np.full(3, 0.1), ones, zeros], {})
    distinct = reference(graph, [np.array([0.1, 0.2, 0.4]), ones, zeros], {})
    assert np.isfinite(constant.outputs[0]).all()  # the residue, not 0/0
    assert constant.problem is not None and constant.problem.startswith("ill-conditioned")
    assert distinct.problem is None


@pytest.mark.parametrize("target", available_targets())
def test_random_graphs_lower_correctly(target):
    @settings(max_examples=max(10, settings.default.max_examples // 10))  # ci: 10, long: 100
    @given(graphs(max_nodes=6, targets=[target]))
    def check(g):
        assert_lowering_correct(g, targets=[target])

    check()


def test_pytest_plugin_fixture_checks_the_chosen_targets(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent(f"""
        from hypothesis import given, settings
        from shipei.testing import graphs

        @settings(max_examples=3, deadline=None)
        @given(g=graphs(ops=["add", "relu", "matmul", "softmax"], max_nodes=3, targets=["torch"]))
        def test_random(lowering_check, g):
            lowering_check(g)

        def test_file(lowering_check, shipei_targets):
            assert shipei_targets == ["torch"]
            lowering_check({str(MLP)!r})

        def test_missing_target_skips(lowering_check):
            lowering_check({str(MLP)!r}, targets=["nope"])
    """))
    # Loaded with -p, as without the installed pytest11 entry point.
    command = [sys.executable, "-m", "pytest", "-p", "shipei.testing.plugin", "-p", "_hypothesis_pytestplugin",
               "-p", "no:cacheprovider", "--shipei-targets", "torch", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "2 passed, 1 skipped" in result.stdout, result.stdout + result.stderr
    assert "shipei targets: torch" in result.stdout
