"""frontend.unparse: graph -> DSL source that elaborates back to the same graph, node for node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from shipei.frontend import elaborate_file, elaborate_source
from shipei.frontend.unparse import format_dim, literal, unparse
from shipei.ir.errors import ShipeiError
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.init import init_params
from shipei.ir.interpreter import interpret
from shipei.ir.printer import print_graph
from shipei.ir.registry import all_ops
from shipei.ir.types import DType, Sym, TensorType, dim_add, dim_mul, dim_sub

from shipei.testing import graphs, make_inputs, programs
from shipei.testing.strategies import generate, make_space

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.sp"))


def round_trip(graph: Graph) -> None:
    assert print_graph(elaborate_source(unparse(graph))) == print_graph(graph)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_round_trip_with_their_layer_params(path):
    round_trip(elaborate_file(path))


@given(graphs(max_nodes=10))
def test_print_then_elaborate_gives_an_equal_graph(g):
    round_trip(g)


@given(programs(max_nodes=6))
def test_programs_are_dsl_source(text):
    assert text.startswith("model G() {") and "forward(" in text
    elaborate_source(text)


@pytest.mark.parametrize("op", sorted(n for n, d in all_ops().items() if "transfer" not in d.traits))
def test_every_op_has_an_exact_dsl_spelling(op):
    """Every op a model holds (a transfer is the partitioner's, placed between two programs)."""
    space = make_space(ops=[op], min_nodes=1, max_nodes=1)
    for seed in range(4):
        round_trip(generate(seed, space))


def test_a_program_reads_as_the_user_would_write_it():
    g = Graph("Net")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (Sym.named("B"), 4)))
    w = b.add_param("fc.weight", TensorType(DType.f32, (4, 4)), Init("normal", (("std", 0.02),)))
    h = b("matmul", x, w)
    g.outputs = [b("softmax", b("add", h, b("neg", x)), axis=-1), b("reduce_sum", h, axes=(1,), keepdims=True)]
    assert unparse(g) == """\
layer _fc() {
    param weight: f32[4, 4] = normal(std=0.02)
    forward(x: f32[1]) -> f32[1] { return x }
}

model Net() {
    fc = _fc()

    forward(x: f32[B, 4]) -> (f32[B, 4], f32[B, 1]) {
        v0 = x @ fc.weight
        v1 = -x
        v2 = v0 + v1
        v3 = softmax(v2, axis=-1)
        v4 = sum(v0, axis=[1], keepdim=true)
        return v3, v4
    }
}
"""
    round_trip(g)


def test_literals_and_dims():
    assert [literal(v) for v in (float("inf"), -float("inf"), float("nan"), -1.5, 1e-05, True, "a\"b")] == [
        "inf", "-inf", "nan", "-1.5", "1e-05", "true", '"a\\"b"']
    assert literal(np.array([[1, 2]], np.int32)) == "[[1, 2]]"
    b, t = Sym.named("B"), Sym.named("T")
    assert format_dim(dim_add(dim_mul(b, t), 1)) == "B*T + 1"
    assert format_dim(dim_sub(4, b)) == "4 - B"
    assert format_dim(dim_sub(0, dim_mul(b, 2))) == "0 - 2*B"


def test_constants_with_infinities_and_symbolic_dims_round_trip():
    g = Graph("C")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (Sym.named("B"), 2)))
    c = b("constant", value=np.array([-np.inf, 0.5], np.float32), dtype=DType.f32)
    r = b("reshape", b("add", x, c), shape=(dim_mul(Sym.named("B"), 2),))
    g.outputs = [r, b("iota", length=Sym.named("B"), dtype=DType.i32)]
    round_trip(g)


def test_a_slice_the_dsl_cannot_spell_prints_as_equivalent_indexing():
    g = Graph("S")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (5, 6)))
    g.outputs = [b("slice", x, axes=(0, 1), starts=(1, -4), stops=(4, 2**62), steps=(1, 2))]
    text = unparse(g)
    assert "x[1:4, 2:6:2]" in text
    again = elaborate_source(text)
    xs = make_inputs(g, 0)
    np.testing.assert_array_equal(interpret(again, xs, {})[0], interpret(g, xs, {})[0])


def test_graphs_the_dsl_cannot_express_are_errors():
    g = Graph("E")
    b = Builder(g)
    b.input("x", TensorType(DType.f32, (2,)))
    with pytest.raises(ShipeiError, match="no outputs"):
        unparse(g)


def test_constant_builtin_checks_its_arguments():
    def model(body: str) -> str:
        return f"model M() {{ forward(x: f32[2]) -> f32[2] {{ {body} }} }}"

    g = elaborate_source(model("return x + constant([1.0, 2.5], f32)"))
    assert g.nodes[0].op == "constant"
    np.testing.assert_array_equal(interpret(g, [np.zeros(2, np.float32)], init_params(g))[0], [1.0, 2.5])
    for body, message in [("return x + constant([[1.0], [2.0, 3.0]], f32)", "rectangular"),
                          ("c = constant([inf], i32)\n return x", "inf and nan"),
                          ("c = constant(x, f32)\n return x", "numbers or nested lists"),
                          ("c = constant([1], 3)\n return x", "needs a dtype")]:
        with pytest.raises(ShipeiError, match=message):
            elaborate_source(model(body))
