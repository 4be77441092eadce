"""Measured costs: a node's signature, the profile file, and the cost model and planner using it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shipei.ir.cost import Costs, analytic_seconds, node_seconds
from shipei.ir.errors import ShipeiError
from shipei.ir.placement import Placement
from shipei.ir.plan import Cluster, layers, plan
from shipei.ir.profile import Profile, signature

import shipei

MLP = "examples/mlp.sp"


def test_a_signature_names_the_op_its_attributes_and_concrete_types() -> None:
    graph = shipei.parse(MLP)
    softmax = next(n for n in graph.nodes if n.op == "softmax")
    assert signature(softmax, {"B": 4}) == "softmax {axis = -1} : (f32[4, 10]) -> (f32[4, 10])"
    assert signature(softmax, {"B": 8}) != signature(softmax, {"B": 4})


def test_measured_seconds_replace_the_roofline_where_the_profile_has_them() -> None:
    graph = shipei.parse(MLP)
    dims, cpu = {"B": 4}, Placement("torch", "cpu")
    measured = {signature(n, dims): 1e-3 for n in graph.nodes[:2] if n.operands}
    costs = Costs(profile=Profile("MLP", dims, 1, {"torch:cpu": measured}, {"torch:cpu": 2e-3}))
    for node in graph.nodes:
        if signature(node, dims) in measured:
            assert node_seconds(node, cpu, dims, costs) == 1e-3
        else:  # not measured, or measured at other shapes or on another target
            assert node_seconds(node, cpu, dims, costs) == analytic_seconds(node, cpu, dims, Costs())
        assert node_seconds(node, Placement("jax", "cpu"), dims, costs) == analytic_seconds(
            node, Placement("jax", "cpu"), dims, Costs())
        if signature(node, {"B": 8}) not in measured:
            assert node_seconds(node, cpu, {"B": 8}, costs) == analytic_seconds(node, cpu, {"B": 8}, Costs())
    assert costs.call_seconds("torch", "cpu") == 2e-3
    assert costs.call_seconds("torch", "cuda") == Costs().call["torch"]


def test_the_planner_predicts_stages_from_the_profile() -> None:
    """Every node measured at 1 ms and a call at 0.5 ms: a stage's prediction is its node count
    in ms plus 0.5, whatever the roofline says."""
    graph = shipei.parse(MLP)
    dims = {"B": 4}
    profile = Profile("MLP", dims, 1, {"torch:cpu": {signature(n, dims): 1e-3 for n in graph.nodes if n.operands}},
                      {"torch:cpu": 5e-4})
    costs = Costs(profile=profile)
    cluster = Cluster.local(2, "torch")
    planned = plan(graph, cluster, dims, 4, costs=costs)
    units = {u.name: u for u in layers(graph, cluster, dims, costs)}
    assert len(planned.stages) == 2
    for stage in planned.stages:
        nodes = [n for name in stage.layers for n in units[name].nodes if n.operands]
        assert stage.seconds == pytest.approx(len(nodes) * 1e-3 + 5e-4)


def test_a_profile_round_trips_and_a_bad_one_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    profile = Profile("MLP", {"B": 4}, 1, {"torch:cpu": {"relu : (f32[4,256]) -> (f32[4,256])": 1e-6}},
                      {"torch:cpu": 1e-5})
    profile.save(path)
    assert Profile.load(path) == profile
    for text, message in [
        ("{", "not JSON"),
        ('{"version": 9}', "is not a version-1 profile"),
        (json.dumps({"version": 1, "nodes": {"torch:cpu": {"x": -1.0}}, "call": {}}), "non-negative seconds"),
        (json.dumps({"version": 1, "nodes": {"torch:cpu": {"x": "fast"}}, "call": {}}), "non-negative seconds"),
        (json.dumps({"version": 1, "nodes": {}, "call": {}, "dims": {"B": "four"}}), "'dims' must map"),
    ]:
        path.write_text(text)
        with pytest.raises(ShipeiError, match=message):
            Profile.load(path)
    with pytest.raises(ShipeiError, match="cannot read the profile"):
        Profile.load(tmp_path / "absent.json")


@pytest.mark.parametrize(("slow", "fast"), [("jax:cpu", "torch:cpu"), ("torch:cpu", "jax:cpu")])
def test_the_partitioner_weighs_nodes_by_the_profile(slow: str, fast: str) -> None:
    """fc1 is mapped to torch; the rest may run on torch or jax. Measured a second a node on one and
    nothing on the other, they go to the other, whichever it is."""
    dims = {"B": 8}
    optimized = shipei.compile(MLP, "torch").ir
    nodes = {signature(n, dims): n for n in optimized.nodes if n.operands}
    profile = Profile("MLP", dims, 1, {slow: dict.fromkeys(nodes, 1.0), fast: dict.fromkeys(nodes, 0.0)},
                      {slow: 0.0, fast: 0.0})
    compiled = shipei.compile(MLP, "jax", device_map={"fc1": "torch:cpu"}, profile=profile,
                              pass_options={"dims": dims})
    placed = {n.op: str(n.placement) for n in compiled.ir.nodes if n.module != "fc1" and n.op != "transfer"}
    assert placed and set(placed.values()) == {fast}, placed
