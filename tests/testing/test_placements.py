"""Placements as a property: random graphs under random valid placements over the four frameworks
equal the reference, and a wrong lowering in one framework is caught when its node lands there."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shipei.codegen import get_target

import shipei
from shipei.testing import LoweringMismatch, assert_lowering_correct, available_targets, graphs, placements
from shipei.testing.lowering import lowers


@settings(max_examples=12)  # each example compiles a pipeline of up to four frameworks' programs
@given(data=st.data())
def test_random_graphs_under_random_placements_equal_the_reference(data: st.DataObject) -> None:
    graph = data.draw(graphs(max_nodes=6, min_nodes=3))
    hints = data.draw(placements(graph))
    assert_lowering_correct(graph, placements=hints)


@given(data=st.data())
def test_placements_name_a_framework_that_lowers_the_node(data: st.DataObject) -> None:
    graph = data.draw(graphs(max_nodes=8))
    hints = data.draw(placements(graph))
    assert len(hints) == len(graph.nodes)
    for node, hint in zip(graph.nodes, hints):
        if hint is None:
            continue
        target, device = hint.split(":")
        assert device == "cpu" and target in available_targets() and node.operands
        assert all(v.dtype in lowers(target)[node.op] for v in (*node.operands, *node.results))


def test_a_wrong_lowering_in_one_framework_is_caught_where_its_node_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(get_target("tf").rules, "exp", "tf.sin({0})")
    source = "model M() { forward(x: f32[4]) -> f32[4] { return relu(exp(x)) } }"
    graph = shipei.parse(source)
    x = [np.linspace(0, 1, 4, dtype=np.float32)]
    with pytest.raises(LoweringMismatch) as info:
        assert_lowering_correct(graph, placements=["tf:cpu", "torch:cpu"], inputs=x)
    assert info.value.target.startswith("hetero(") and "placed exp: tf:cpu, relu: torch:cpu" in str(info.value)
    assert_lowering_correct(graph, placements=["jax:cpu", "tf:cpu"], inputs=x)
