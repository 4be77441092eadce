"""ir.subgraph: the cone of values some outputs depend on, and a standalone graph computing them."""

from __future__ import annotations

import numpy as np
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.interpreter import interpret
from shipei.ir.printer import print_graph
from shipei.ir.subgraph import cone, extract
from shipei.ir.types import DType, Sym, TensorType
from shipei.ir.verifier import verify

B = Sym.named("B")


def _graph() -> Graph:
    """y = tanh(relu(x) * w) + x; positions = iota(B); z = y2 unused by y."""
    g = Graph("G")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (B, 4)))
    unused = b.input("u", TensorType(DType.f32, (3,)))
    w = b.add_param("w", TensorType(DType.f32, (4,)), Init("ones"))
    r = b("relu", x)
    m = b("mul", r, w)
    y = b("add", b("tanh", m), x)
    g.outputs = [y, b("iota", length=B, dtype=DType.i64), b("neg", unused)]
    return g


def test_cone_stops_at_cuts() -> None:
    g = _graph()
    relu, mul, tanh, add = g.nodes[:4]
    assert cone([g.outputs[0]]) == {g.inputs[0], g.params[0], relu.result, mul.result, tanh.result, add.result}
    assert cone([tanh.result], {mul.result}) == {tanh.result, mul.result}


def test_extract_keeps_what_the_cone_reads_and_turns_cuts_into_inputs() -> None:
    g = _graph()
    before = print_graph(g)
    relu, mul, tanh, add = g.nodes[:4]
    part, sources = extract(g, [add.result], {mul.result})
    verify(part)
    assert [n.op for n in part.nodes] == ["tanh", "add"]
    assert [v.name for v in part.inputs] == ["x", "c0"] and sources == [g.inputs[0], mul.result]
    assert part.params == [] and print_graph(g) == before, "the graph itself is left as it was"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (y,) = interpret(part, [x, np.full((2, 4), 0.5, np.float32)], {})
    np.testing.assert_allclose(y, np.tanh(0.5) + x, rtol=1e-6)


def test_a_part_whose_symbols_its_inputs_do_not_bind() -> None:
    """iota(B) reads no input: the larger graph's symbols are passed in."""
    g = _graph()
    part, sources = extract(g, [g.outputs[1]])
    assert sources == [] and part.inputs == [] and [n.op for n in part.nodes] == ["iota"]
    (positions,) = interpret(part, [], {}, symbols={"B": 5})
    assert positions.tolist() == [0, 1, 2, 3, 4]
