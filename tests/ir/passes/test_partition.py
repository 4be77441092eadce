"""partition: hints are constraints, capabilities decide what can go where, the assignment is
optimal on chains and near it on DAGs, transfers and copies of constants make every value local,
and the partitioned graph computes what the original does."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from shipei.codegen import TARGETS, capabilities
from shipei.ir.errors import ShipeiError
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.init import init_params
from shipei.ir.interpreter import interpret
from shipei.ir.passes.manager import PassContext, run_passes
from shipei.ir.passes.partition import PartitionRequest, _Problem
from shipei.ir.placement import Placement
from shipei.ir.printer import print_graph
from shipei.ir.region import regions
from shipei.ir.types import DType, Sym, TensorType

import shipei
from shipei.testing.lowering import sample_inputs
from shipei.testing.strategies import generate, make_space

P = Placement.parse
CAPS = {t: capabilities(t) for t in TARGETS}
#: Three device kinds, so that costs differ and crossings go through the host.
THREE = [P("torch:cuda"), P("jax:tpu"), P("mindspore:ascend")]
B = Sym.named("B")


def exhaustive(problem: _Problem) -> float:
    """The cheapest assignment's cost, by trying them all (numpy, all at once)."""
    n, k = len(problem.nodes), len(problem.places)
    labels = np.array(list(itertools.product(*problem.allowed)), dtype=np.int64).reshape(-1, n)
    unary = np.array(problem.unary)
    total = unary[np.arange(n), labels].sum(axis=1)
    for v, producer, users in problem.edges:
        source = labels[:, producer]
        crossing = np.array(problem.crossing[v])
        for d in range(k):
            read_there = (labels[:, users] == d).any(axis=1) & (source != d)
            total = total + np.where(read_there, crossing[source, d], 0.0)
    return float(total.min())


def hinted(graph: Graph, rng: random.Random, share: float) -> Graph:
    """Some nodes told to run on one of the three: a problem whose answer mixes placements."""
    for node in graph.nodes:
        if node.operands and rng.random() < share:
            node.placement = Placement(rng.choice(THREE).target)
    return graph


def chain(length: int, rng: random.Random) -> Graph:
    """A chain of elementwise ops and matmuls with sizes that make both compute and crossings count."""
    g = Graph("Chain")
    b = Builder(g)
    h = b.input("x", TensorType(DType.f32, (B, 512)))
    for i in range(length):
        if rng.random() < 0.4:
            h = b("matmul", h, b.add_param(f"w{i}", TensorType(DType.f32, (512, 512)), Init("zeros")))
        else:
            h = b(rng.choice(["relu", "exp", "tanh", "neg"]), h)
    g.outputs = [h]
    return g


@pytest.mark.parametrize("seed", range(12))
def test_chains_are_solved_exactly(seed: int) -> None:
    rng = random.Random(seed)
    graph = hinted(chain(12, rng), rng, share=0.3)
    problem = _Problem(graph, PartitionRequest(THREE, CAPS, dims={"B": 4096}))
    assert problem.cost(problem.solve()) == pytest.approx(exhaustive(problem), rel=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_dags_are_within_five_percent_of_the_best(seed: int) -> None:
    graph = generate(seed, make_space(max_nodes=12, min_nodes=8, dtypes=["f32"], targets=TARGETS))
    graph = hinted(graph, random.Random(seed), share=0.25)
    problem = _Problem(graph, PartitionRequest(THREE, CAPS, dims={"B": 64}))
    assert len(problem.nodes) <= 12  # the brute force stays small
    best = exhaustive(problem)
    assert problem.cost(problem.solve()) <= best * 1.05 + 1e-12


def test_hints_bind_and_the_report_says_why() -> None:
    graph = shipei.parse("""model M() {
        fc = Linear(8, 8)
        forward(x: f32[B, 8]) -> f32[B, 8] {
            @on(jax) y = relu(fc(x))
            return exp(y)
        }
    }""")
    ctx = PassContext(partition=PartitionRequest([P("torch:cpu"), P("jax:cpu")], CAPS))
    graph = run_passes(graph, ["partition"], ctx)
    by_op = {n.op: (str(n.placement), ctx.results.partition_report.decisions[n].reason) for n in graph.nodes}
    assert by_op["relu"] == ("jax:cpu", "hint")
    assert by_op["exp"][1] == "cost"


def test_a_device_map_names_modules_as_accelerate_does() -> None:
    graph = shipei.parse("examples/transformer.sp", n_layers=2)
    request = PartitionRequest([P("torch:cpu"), P("jax:cpu")], CAPS,
                               device_map={"h.0": P("torch:cpu"), "*": P("jax:cpu")}, dims={"B": 2, "T": 16})
    ctx = PassContext(partition=request)
    graph = run_passes(graph, ["partition"], ctx)
    for node in graph.nodes:
        expected = "torch:cpu" if node.module.startswith("h.0") and node.op != "transfer" else None
        if expected:
            assert str(node.placement) == expected, node
    stages = regions(graph, lambda n: n.placement)
    assert [str(s.key) for s in stages] == ["jax:cpu", "torch:cpu", "jax:cpu"]
    assert ctx.results.partition_report.summary(graph, {"B": 2, "T": 16}).endswith(
        "3 stages, 2 transfers, 32.0 KiB, zero-copy")


def test_a_device_map_naming_no_module_is_an_error() -> None:
    graph = shipei.parse("examples/transformer.sp", n_layers=2)
    ctx = PassContext(partition=PartitionRequest([P("torch:cpu")], CAPS, device_map={"h.7": P("torch:cpu")}))
    with pytest.raises(ShipeiError, match="the device map names 'h.7', which is not a module of GPT") as info:
        run_passes(graph, ["partition"], ctx)
    assert info.value.loc is not None and info.value.hint in ("did you mean 'h.0'?", "did you mean 'h.1'?")


def test_an_op_no_permitted_placement_lowers_is_an_error_at_its_line() -> None:
    graph = shipei.parse("""model M() {
        forward(x: bf16[4]) -> bf16[4] {
            @on(mindspore) y = exp(x)
            return y
        }
    }""")
    ctx = PassContext(partition=PartitionRequest([P("torch:cpu"), P("mindspore:cpu")], CAPS))
    with pytest.raises(ShipeiError) as info:
        run_passes(graph, ["partition"], ctx)
    assert "no placement can run exp" in info.value.message and info.value.loc.line == 3
    assert "mindspore cannot lower exp on bf16" in info.value.message
    assert "torch:cpu: the source asks for mindspore" in info.value.message


def test_capability_sends_a_node_where_it_can_run() -> None:
    graph = shipei.parse("model M() { forward(x: bf16[4]) -> bf16[4] { return exp(x) } }")
    ctx = PassContext(partition=PartitionRequest([P("mindspore:cpu"), P("tf:cpu")], CAPS))
    graph = run_passes(graph, ["partition"], ctx)
    (node,) = graph.nodes
    assert str(node.placement) == "tf:cpu" and ctx.results.partition_report.decisions[node].reason == "capability"


def test_a_source_only_the_outputs_read_goes_where_it_can_run() -> None:
    """An iota nothing reads is placed with the most used placement only where that target lowers
    it (MindSpore has no bf16 iota here): a property test found one left unlowerable."""
    graph = shipei.parse("""model M() {
        forward(x: f32[4]) -> (bf16[3], f32[4]) {
            @on(mindspore) y = abs(x)
            return arange(3, dtype=bf16), y
        }
    }""")
    assert DType.bf16 not in CAPS["mindspore"]["iota"]
    ctx = PassContext(partition=PartitionRequest([P("torch:cpu"), P("mindspore:cpu")], CAPS))
    graph = run_passes(graph, ["partition"], ctx)
    placed = {n.op: str(n.placement) for n in graph.nodes}
    assert placed == {"abs": "mindspore:cpu", "iota": "torch:cpu"}


@pytest.mark.parametrize("seed", range(8))
def test_a_partitioned_graph_computes_what_the_original_does(seed: int) -> None:
    graph = generate(seed, make_space(max_nodes=10, min_nodes=5, dtypes=["f32"], targets=TARGETS))
    weights = init_params(graph, 0)
    inputs, _ = sample_inputs(graph, seed, weights)
    expected = interpret(graph, inputs, weights, precision="f64")
    rng = random.Random(seed)
    for node in graph.nodes:
        node.placement = Placement(rng.choice(TARGETS)) if node.operands and rng.random() < 0.5 else None
    places = [Placement(t, "cpu") for t in TARGETS]
    ctx = PassContext(partition=PartitionRequest(places, CAPS))
    graph = run_passes(graph, ["partition"], ctx)  # verified after the pass
    for node in graph.nodes:
        assert node.placement.full
        for v in node.operands:  # every value read where it was computed, or handed over
            assert (v.producer is None or v.producer.placement == node.placement
                    or node.op == "transfer"), print_graph(graph)
    for got, want in zip(interpret(graph, inputs, weights, precision="f64"), expected):
        np.testing.assert_array_equal(got, want)


def test_fusion_never_merges_two_placements() -> None:
    graph = shipei.parse("""model M() {
        forward(x: f32[B, 8]) -> f32[B, 8] {
            y = relu(x)
            @on(jax) z = exp(y)
            return tanh(z)
        }
    }""")
    ctx = PassContext(partition=PartitionRequest([P("torch:cpu"), P("jax:cpu")], CAPS))
    graph = run_passes(graph, ["partition", "fuse"], ctx)
    for group in {n.group for n in graph.nodes} - {None}:
        assert len({n.placement for n in graph.nodes if n.group == group}) == 1
