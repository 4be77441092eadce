"""The pipeline planner: cluster descriptions, layers, cuts equal to brute force on small cases,
memory refused, and a GPT-3-sized model over 1,024 devices of three kinds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from shipei.ir.cost import Costs, DeviceKind
from shipei.ir.errors import ShipeiError
from shipei.ir.plan import Cluster, _Slot, crossings, layers, plan

import shipei

CPU2 = Cluster.from_dict({"machines": [{"devices": {"cpu": 2}}]})


def gpt(**params: int) -> shipei.ir.graph.Graph:
    return shipei.parse("examples/transformer.sp", **params)


def test_a_cluster_reads_from_toml(tmp_path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text('[links]\nintra = 900\ninter = 25\n[[machines]]\nname = "gpu"\ncount = 2\n'
                    'devices = { gpu = 8 }\n[[machines]]\ndevices = { npu = 4, cpu = 2 }\n[targets]\ncpu = "jax"\n')
    cluster = Cluster.from_toml(path)
    assert [m.name for m in cluster.machines] == ["gpu-0", "gpu-1", "m1"]
    assert cluster.machines[2].devices == {"ascend": 4, "cpu": 2} and cluster.devices == 22
    assert (cluster.intra, cluster.inter, cluster.targets["cpu"]) == (900e9, 25e9, "jax")


@pytest.mark.parametrize("text, message", [
    ("[[machines]]\ndevices = { fpga = 2 }\n", "'fpga = 2' is not a device kind and a count"),
    ("[[machines]]\ndevices = { cuda = 8 }\ncount = 0\n", "count must be a positive int"),
    ("[[machines]]\ndevices = {}\n", "no machine has a device"),
    ("[[machines]]\ndevices = { cpu = 1 }\n[targets]\ncpu = \"caffe\"\n", "'caffe' is not a target"),
    ("[[machines\n", "cannot read the cluster description"),
    # types and values a hand-written file may hold: each an error naming it, never a wrong cluster
    ("machines = 5\n", "machines must be \\[\\[machines\\]\\] tables"),
    ("machines = [5]\n", "machine 0 must be a table"),
    ("[[machines]]\ndevices = \"gpu\"\n", "devices must be a table"),
    ("[[machines]]\ndevices = { gpu = 1, cuda = 3 }\n", "'cuda = 3' is not a device kind and a count"),
    ("[[machines]]\ndevices = { gpu = true }\n", "'cuda = True' is not a device kind and a count"),
    ("[[machines]]\ndevices = { gpu = 1 }\ncount = true\n", "count must be a positive int, got True"),
    ("[[machines]]\ndevices = { gpu = 1 }\nmemory = 5\n", "machine 0: unknown key 'memory'"),
    ("[[machines]]\nname = \"a|b\"\ndevices = { gpu = 1 }\n", "name 'a\\|b' is not 1-64 letters"),
    ("[[machines]]\nname = \"a\"\ncount = 2\ndevices = { gpu = 1 }\n[[machines]]\nname = \"a-0\"\n"
     "devices = { gpu = 1 }\n", "machine names repeat: a-0"),
    ("[[machines]]\ndevices = { gpu = 8 }\ncount = 1000000000000\n", "more than the 1,048,576 devices"),
    ("[[machines]]\ndevices = { gpu = 100000000 }\n", "more than the 1,048,576 devices"),
    ("links = 5\n[[machines]]\ndevices = { gpu = 1 }\n", "links must be a table"),
    ("[links]\nintra = \"fast\"\n[[machines]]\ndevices = { gpu = 1 }\n", "intra must be a positive number"),
    ("[links]\ninter = 0\n[[machines]]\ndevices = { gpu = 1 }\n", "inter must be a positive number of GB/s, got 0"),
    ("[links]\ninter = -25\n[[machines]]\ndevices = { gpu = 1 }\n", "inter must be a positive number"),
    ("[links]\ninter = nan\n[[machines]]\ndevices = { gpu = 1 }\n", "inter must be a positive number"),
    ("[links]\nintra = inf\n[[machines]]\ndevices = { gpu = 1 }\n", "intra must be a positive number"),
    ("[links]\nintr = 5\n[[machines]]\ndevices = { gpu = 1 }\n", "\\[links\\]: unknown key 'intr'"),
    ("targets = 5\n[[machines]]\ndevices = { gpu = 1 }\n", "targets must be a table"),
    ("[targets]\nfoo = \"torch\"\n[[machines]]\ndevices = { gpu = 1 }\n", "'foo' is not a device kind"),
])
def test_a_bad_cluster_is_a_clear_error(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ShipeiError, match=message):
        Cluster.from_toml(path)


def test_layers_follow_the_top_level_modules_and_cuts_count_what_crosses() -> None:
    graph = gpt(n_layers=3)
    units = layers(graph, CPU2, {"B": 2, "T": 16}, Costs())
    assert [u.name for u in units] == ["wte", "wpe", "h.0", "h.1", "h.2", "ln_f", "lm_head"]
    assert sum(len(u.nodes) for u in units) == len(graph.nodes)
    cuts = crossings(graph, units, {"B": 2, "T": 16})
    residual = 2 * 16 * 128 * 4  # f32[B, T, d_model]
    assert cuts[2] == cuts[3] == residual  # after a block, only the residual stream goes on
    assert cuts[0] == 2 * 16 * 128 * 4  # the token embeddings wait for the positions' add


def _brute_force(graph, cluster: Cluster, dims, micro_batches: int, costs: Costs) -> float:
    """Every way to cut the layers and give each stage a device, the devices taken in the planner's
    order (fastest kind first), a stage receiving over the machine's link when the stage before ran
    on the same machine; the least sum(t) + (B - 1) * max(t)."""
    units = layers(graph, cluster, dims, costs)
    cuts = crossings(graph, units, dims)
    n = len(units)
    kinds = sorted({k for m in cluster.machines for k in m.devices}, key=lambda k: -costs.devices[k].flops)
    slots = [_Slot(m.name, k, i, costs.devices[k].memory) for k in kinds for m in cluster.machines
             for i in range(m.devices.get(k, 0))]
    best = math.inf
    for stages in range(1, n + 1):
        for ends in itertools.combinations(range(1, n), stages - 1):
            bounds = [0, *ends, n]
            for chosen in itertools.combinations(range(len(slots)), stages):
                times = []
                for (a, b), j, before in zip(itertools.pairwise(bounds), chosen, (None, *chosen)):
                    slot = slots[j]
                    used = [u for u in units[a:b]]
                    memory = sum(u.weight_bytes for u in used) + max(u.activation_bytes for u in used)
                    if memory > slot.memory:
                        break
                    same = before is not None and slots[before].machine == slot.machine
                    receive = cuts[a - 1] / (cluster.intra if same else cluster.inter) if a else 0.0
                    call = costs.call[cluster.targets[slot.kind]]
                    times.append(sum(u.seconds[slot.kind] for u in used) + call + receive)
                else:
                    best = min(best, sum(times) + (micro_batches - 1) * max(times))
    return best


CLUSTERS = [
    {"machines": [{"devices": {"cpu": 2}}]},
    {"links": {"intra": 10, "inter": 0.001}, "machines": [{"devices": {"cuda": 1}}, {"devices": {"cpu": 2}}]},
    {"links": {"intra": 50, "inter": 1}, "machines": [{"devices": {"tpu": 2}}, {"devices": {"ascend": 1}}]},
]


@pytest.mark.parametrize("spec", CLUSTERS)
@pytest.mark.parametrize("micro_batches", [1, 4, 16])
def test_the_dynamic_programme_equals_brute_force_on_small_cases(spec: dict, micro_batches: int) -> None:
    graph = gpt(n_layers=2, d_model=64, n_heads=2)
    cluster, dims, costs = Cluster.from_dict(spec), {"B": 4, "T": 32}, Costs()
    found = plan(graph, cluster, dims, micro_batches, costs)
    assert found.seconds == pytest.approx(_brute_force(graph, cluster, dims, micro_batches, costs), rel=1e-9)


def test_a_stage_that_does_not_fit_its_device_is_refused() -> None:
    graph = gpt(n_layers=2)
    units = layers(graph, CPU2, {"B": 2, "T": 16}, Costs())
    biggest = max(u.weight_bytes + u.activation_bytes for u in units)
    tight = Costs(devices={**Costs().devices, "cpu": DeviceKind(1.6e11, 1.9e11, 2e10, biggest * 1.5)})
    found = plan(graph, CPU2, {"B": 2, "T": 16}, 4, tight)
    assert all(s.memory_bytes <= biggest * 1.5 for s in found.stages) and len(found.stages) == 2
    tiny = Costs(devices={**Costs().devices, "cpu": DeviceKind(1.6e11, 1.9e11, 2e10, 1024)})
    with pytest.raises(ShipeiError, match="does not fit this cluster"):
        plan(graph, CPU2, {"B": 2, "T": 16}, 4, tiny)


def test_a_gpt3_sized_model_over_1024_devices_of_three_kinds() -> None:
    """(How long planning takes, against cluster size, is measured in benchmarks/, not asserted here.)"""
    graph = gpt(n_layers=96, d_model=12288, n_heads=96, vocab=50257, max_len=2048)
    cluster = Cluster.from_dict({"links": {"intra": 900, "inter": 50}, "machines": [
        {"devices": {"cuda": 8}, "count": 64}, {"devices": {"ascend": 8}, "count": 32},
        {"devices": {"tpu": 4}, "count": 64}]})
    assert cluster.devices == 1024
    found = plan(graph, cluster, {"B": 1, "T": 2048}, micro_batches=16)
    covered = [name for s in found.stages for name in s.layers]
    assert covered == [u.name for u in layers(graph, cluster, {"B": 1, "T": 2048}, Costs())]
    assert all(s.memory_bytes <= Costs().devices[s.placement.device].memory for s in found.stages)
    assert 0 < found.bubble < 1 and len({(s.machine, str(s.placement)) for s in found.stages}) == len(found.stages)
    np.testing.assert_allclose(found.seconds, sum(s.seconds for s in found.stages)
                               + 15 * max(s.seconds for s in found.stages))
