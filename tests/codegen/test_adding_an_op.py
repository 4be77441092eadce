"""The contributor's recipe, proven: an op is its definition (plus a lowering per target that has a
faster kernel than its decomposition), and everything else follows from the registry.

A fixture registers `softsign` (x / (1 + |x|)) with a decomposition and no lowering anywhere; the
DSL then parses it, the verifier, interpreter, printer and unparser handle it, the property-test
generators draw it, and every target runs it. A test-only target that lowers only primitives
(`primitive_target.py`) runs the three examples through the decompositions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import primitive_target
import pytest
from hypothesis import given
from shipei.codegen import TARGETS, GeneratedModule, capabilities, emit, register_target
from shipei.frontend.unparse import unparse
from shipei.ir.graph import Graph
from shipei.ir.interpreter import interpret
from shipei.ir.ops.rules import FLOATS, scalar, unary
from shipei.ir.parser import parse_ir
from shipei.ir.printer import print_graph
from shipei.ir.registry import FusionKind, all_ops, op, unregister
from shipei.ir.tolerance import compare
from shipei.ir.types import DType
from shipei.ir.verifier import verify
from shipei.runtime.executable import import_generated

import shipei
from shipei.testing import assert_lowering_correct, available_targets, graphs, make_inputs

EXAMPLES = Path(__file__).parents[2] / "examples"
SOURCE = """
model Soft() {
    forward(x: f32[B, 4]) -> f32[B, 4] {
        h = softsign(x) * 2.0
        return h
    }
}
"""


def _softsign(b, operands, attrs):
    (x,) = operands
    return [b("div", x, b("add", b("abs", x), scalar(b, 1.0, x)))]


@pytest.fixture
def softsign() -> Iterator[str]:
    """The whole definition of a new elementwise op: no lowering, a decomposition."""
    op("softsign", ["x"], FusionKind.ELEMWISE, unary(FLOATS), lambda x: x / (1 + np.abs(x)),
       decomposition=_softsign, doc="x / (1 + |x|)")
    yield "softsign"
    unregister("softsign")


def _run(generated: GeneratedModule, inputs: list[np.ndarray], weights: dict) -> list[np.ndarray]:
    module = import_generated(generated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [np.asarray(y) for y in module.run(module.load(weights, "cpu"), inputs, "cpu")]


def test_a_registered_op_is_parsed_verified_interpreted_and_printed(softsign: str) -> None:
    graph = shipei.parse(SOURCE)
    verify(graph)
    assert [n.op for n in graph.nodes] == ["softsign", "constant", "mul"]
    x = np.array([[-3.0, -0.5, 0.0, 8.0]], np.float32)
    (y,) = interpret(graph, [x], {})
    np.testing.assert_allclose(y, 2 * x / (1 + np.abs(x)), rtol=1e-6)
    assert print_graph(parse_ir(print_graph(graph))) == print_graph(graph)
    assert "softsign(x)" in unparse(graph)
    assert print_graph(shipei.parse(unparse(graph))) == print_graph(graph)


def test_a_registered_op_runs_on_every_target_through_its_decomposition(softsign: str) -> None:
    graph = shipei.parse(SOURCE)
    x = np.linspace(-4, 4, 8, dtype=np.float32).reshape(2, 4)
    (want,) = interpret(graph, [x], {}, precision="f64")
    for target in available_targets():
        assert DType.f32 in capabilities(target)["softsign"], target
        module = emit(graph, target, "soft.sp")
        assert "abs(" in module.source, target  # its decomposition: x / (1 + |x|)
        (got,) = _run(module, [x], {})
        assert compare(got, want, DType.f32).ok, target


def test_the_fuzzer_draws_a_registered_op(softsign: str) -> None:
    @given(graphs(ops=["softsign", "add", "relu"], max_nodes=4, dtypes=["f32"]))
    def lowered_correctly(graph: Graph) -> None:
        assert_lowering_correct(graph, targets=["torch"])

    lowered_correctly()
    drawn = [n.op for seed in range(20) for n in _generate(seed).nodes]
    assert "softsign" in drawn


def _generate(seed: int) -> Graph:
    from shipei.testing.strategies import generate, make_space

    return generate(seed, make_space(ops=["softsign", "add"], dtypes=["f32"]))


@pytest.fixture(scope="module")
def primitives() -> str:
    register_target("primitives", primitive_target.__name__)
    return "primitives"


def test_the_primitive_target_lowers_no_composite_op_yet_runs_them_all(primitives: str) -> None:
    composites = {name for name, opdef in all_ops().items() if opdef.composite}
    assert composites >= {"gelu", "silu", "softmax", "log_softmax", "layer_norm", "batch_norm", "attention", "linear"}
    assert not composites & set(primitive_target.TARGET.rules)
    assert set(capabilities(primitives)) == set(capabilities("torch"))


@pytest.mark.parametrize("example", ["mlp", "cnn", "transformer"])
def test_the_examples_run_on_a_target_that_lowers_only_primitives(primitives: str, example: str) -> None:
    graph = shipei.parse(EXAMPLES / f"{example}.sp")
    assert {n.op for n in graph.nodes} & {name for name, opdef in all_ops().items() if opdef.composite}
    compiled = shipei.compile(graph, primitives)
    # What the program calls: the guarded graph's bound rules (input_bound, last) name the ops they bound.
    body = compiled.module.source.split("\ndef input_bound(")[0]
    for call in ("F.linear", "F.layer_norm", "F.softmax", "F.gelu", "F.batch_norm", "scaled_dot_product_attention"):
        assert call not in body, f"{example}: {call} in a primitives-only program"
    dims = {"B": 2, "T": 8}
    x = make_inputs(graph, seed=1, dims=dims)
    want = shipei.reference(graph, x, compiled.weights)
    got = _run(compiled.module, list(x), compiled.weights)
    for g, w, v in zip(got, want, graph.outputs, strict=True):
        assert compare(g, w, v.dtype).ok, example


def test_targets_are_built_in_or_registered() -> None:
    with pytest.raises(shipei.ShipeiError, match="target 'torch' is built in"):
        register_target("torch", primitive_target.__name__)
    assert "primitives" not in TARGETS
