"""Planning a pipeline for a cluster: where to cut a model's layer sequence into stages, and which
device runs each, as Alpa's stage construction does.

The layers are the model's top-level modules in schedule order (`wte`, `h.0`, ..., `lm_head`);
each has, per device kind, an estimated time (the cost model's roofline, `ir.cost`), the bytes of
the weights it holds and of its activations at the micro-batch, and the bytes that cross a cut
after it. A stage is a run of layers on one device; its time is its layers', its framework's cost
per call, and receiving the values that cross into it (a machine's own link, or the link between machines). GPipe with B
micro-batches takes sum(t) + (B - 1) * max(t): a dynamic programme over the layers and the devices
(fastest kind first) finds, for each bound on the slowest stage, the cuts that minimize the sum,
refusing stages whose weights and activations do not fit their device; the best over the bounds
wins. Every stage time that occurs is a bound; where there are more than `BOUNDS`, a geometric grid
of them is tried first, then the grid cell around the best, finer, until every bound in it is tried.

`Cluster` reads a TOML file:

    [links]             # GB/s
    intra = 900         # between devices of one machine
    inter = 25          # between machines
    [[machines]]
    devices = { cuda = 8 }
    count = 128         # machines of this shape
    [targets]           # which framework runs each device kind (these are the defaults)
    cuda = "torch"
    tpu = "jax"
    ascend = "mindspore"
    cpu = "torch"
"""

from __future__ import annotations

import math
import re
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cost import Costs, format_bytes, nbytes, node_seconds
from .errors import ShipeiError
from .graph import Graph, Node, Value
from .placement import DEVICE_ALIASES, DEVICE_KINDS, TARGETS, Placement

DEFAULT_TARGETS = {"cuda": "torch", "tpu": "jax", "ascend": "mindspore", "cpu": "torch"}
#: How many bounds on the slowest stage one pass of the search tries at most (see the module doc).
BOUNDS = 24


@dataclass(frozen=True)
class Machine:
    name: str
    devices: Mapping[str, int]  # device kind -> how many


@dataclass(frozen=True)
class Cluster:
    """Machines and their devices, the links within and between machines (bytes/s), and the
    framework that runs each device kind."""

    machines: tuple[Machine, ...]
    intra: float = 64e9
    inter: float = 12.5e9
    targets: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TARGETS))

    @staticmethod
    def from_toml(path: str | Path) -> Cluster:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ShipeiError(f"cannot read the cluster description {path}: {e}") from None
        return Cluster.from_dict(data, str(path))

    @staticmethod
    def from_dict(data: Mapping, where: str = "cluster") -> Cluster:
        """The cluster a TOML file's tables describe, every key and value checked: a file a user
        wrote, whose mistakes are errors, never a silently different cluster."""
        _only(data, {"machines", "links", "targets"}, where)
        entries = data.get("machines", [])
        if not isinstance(entries, list):
            raise ShipeiError(f"{where}: machines must be [[machines]] tables", hint=MACHINE_EXAMPLE)
        machines: list[Machine] = []
        devices = 0
        for i, entry in enumerate(entries):
            added = _machines(entry, i, where, MAX_DEVICES - devices)
            devices += sum(sum(m.devices.values()) for m in added)
            machines += added
        if not machines or not any(m.devices for m in machines):
            raise ShipeiError(f"{where}: no machine has a device", hint=MACHINE_EXAMPLE)
        names = Counter(m.name for m in machines)
        if len(names) < len(machines):
            twice = sorted(n for n, k in names.items() if k > 1)
            raise ShipeiError(f"{where}: machine names repeat: {', '.join(twice)}",
                              hint="name each [[machines]] table apart (count = N names its machines NAME-0 ...)")
        links = _table(data, "links", where)
        _only(links, {"intra", "inter"}, f"{where}: [links]")
        targets = _table(data, "targets", where)
        targets = {**DEFAULT_TARGETS, **{DEVICE_ALIASES.get(k, k): v for k, v in targets.items()}}
        for kind, target in targets.items():
            if kind not in DEVICE_KINDS:
                raise ShipeiError(f"{where}: [targets] {kind!r} is not a device kind",
                                  hint=f"device kinds are {', '.join(DEVICE_KINDS)} (or gpu, npu)")
            if target not in TARGETS:
                raise ShipeiError(f"{where}: [targets] {kind} = {target!r} is not a target",
                                  hint=f"targets are {', '.join(TARGETS)}")
        return Cluster(tuple(machines), _bandwidth(links, "intra", 64, where), _bandwidth(links, "inter", 12.5, where),
                       targets)

    @staticmethod
    def local(cores: int, target: str = "torch") -> Cluster:
        """This machine as the runtime uses it: one CPU device per core, each running `target`;
        values pass between them by DLPack, with no copy."""
        return Cluster((Machine("this machine", {"cpu": cores}),), math.inf, math.inf,
                       {**DEFAULT_TARGETS, "cpu": target})

    @property
    def devices(self) -> int:
        return sum(sum(m.devices.values()) for m in self.machines)


MACHINE_EXAMPLE = '[[machines]] name = "gpu", count = 4, devices = { cuda = 8 }'
#: The devices a cluster may have in all: more than the largest built, and few enough to plan at once.
MAX_DEVICES = 1 << 20
#: What a machine's name may hold: it is printed in tables and written into device maps.
MACHINE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _only(table: Mapping, keys: set[str], where: str) -> None:
    if unknown := sorted(set(table) - keys):
        raise ShipeiError(f"{where}: unknown key {', '.join(map(repr, unknown))}",
                          hint=f"the keys are {', '.join(sorted(keys))}")


def _table(data: Mapping, key: str, where: str) -> Mapping:
    table = data.get(key, {})
    if not isinstance(table, Mapping):
        raise ShipeiError(f"{where}: {key} must be a table, got {table!r}", hint=f"[{key}]")
    return table


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _machines(entry: object, i: int, where: str, room: int) -> list[Machine]:
    """The machines one [[machines]] table describes (`count` of them), with at most `room` devices."""
    if not isinstance(entry, Mapping):
        raise ShipeiError(f"{where}: machine {i} must be a table, got {entry!r}", hint=MACHINE_EXAMPLE)
    _only(entry, {"name", "count", "devices"}, f"{where}: machine {i}")
    name, count = entry.get("name", f"m{i}"), entry.get("count", 1)
    if not isinstance(name, str) or not MACHINE_NAME.fullmatch(name):
        raise ShipeiError(f"{where}: machine {i}: name {name!r} is not 1-64 letters, digits, '_', '.' or '-'")
    if not _whole(count) or count < 1:
        raise ShipeiError(f"{where}: machine {i}: count must be a positive int, got {count!r}")
    devices: dict[str, int] = {}
    for kind, n in _table(entry, "devices", f"{where}: machine {i}").items():
        kind = DEVICE_ALIASES.get(kind, kind)
        if kind not in DEVICE_KINDS or not _whole(n) or n < 1 or kind in devices:
            raise ShipeiError(f"{where}: machine {i}: '{kind} = {n!r}' is not a device kind and a count "
                              "(each kind once)",
                              hint=f"device kinds are {', '.join(DEVICE_KINDS)} (or gpu, npu)")
        devices[kind] = n
    if count * sum(devices.values()) > room:
        raise ShipeiError(f"{where}: machine {i}: {count} machines of {sum(devices.values())} devices: more than "
                          f"the {MAX_DEVICES:,} devices a cluster may have")
    return [Machine(f"{name}-{k}" if count > 1 else name, devices) for k in range(count)]


def _bandwidth(links: Mapping, key: str, default: float, where: str) -> float:
    """[links] `key` in bytes/s, from GB/s: a positive, finite number."""
    value = links.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ShipeiError(f"{where}: [links] {key} must be a positive number of GB/s, got {value!r}")
    return float(value) * 1e9


@dataclass
class Layer:
    """A run of the schedule built by one top-level module."""

    name: str
    nodes: list[Node]
    seconds: dict[str, float]  # device kind -> estimated time per micro-batch
    weight_bytes: float
    activation_bytes: float  # of what it computes, at the micro-batch


@dataclass
class PlannedStage:
    layers: list[str]
    machine: str
    placement: Placement
    seconds: float  # compute and receiving its inputs, per micro-batch
    memory_bytes: float  # weights and activations
    transfer_bytes: float  # what it receives per micro-batch


@dataclass
class Plan:
    stages: list[PlannedStage]
    micro_batches: int
    seconds: float  # one batch: sum(t) + (B - 1) * max(t)
    devices: int

    @property
    def bubble(self) -> float:
        """The share of stage-time the stages sit idle during one batch."""
        busy = self.micro_batches * sum(s.seconds for s in self.stages)
        return 1.0 - busy / (len(self.stages) * self.seconds) if self.seconds else 0.0

    def table(self) -> list[str]:
        """The stages as a markdown table: layers, where, predicted time, memory and what each receives."""
        rows = ["| stage | layers | machine | placement | ms per micro-batch | memory | receives |",
                "|---:|---|---|---|---:|---:|---:|"]
        for k, s in enumerate(self.stages):
            names = s.layers[0] if len(s.layers) == 1 else f"{s.layers[0] or '(inputs)'} .. {s.layers[-1]}"
            rows.append(f"| {k} | {names or '(model)'} | {s.machine} | {s.placement} | {s.seconds * 1e3:.3f} | "
                        f"{format_bytes(s.memory_bytes)} | {format_bytes(s.transfer_bytes)} |")
        return rows

    def device_map(self) -> dict[str, str]:
        """The plan as a device map (module -> placement). It names no "*": the partition pass puts
        model-level nodes (a flatten between two layers) where they cost least, next to their
        neighbours, so that they add no stage."""
        return {name: str(s.placement) for s in self.stages for name in s.layers if name}


def layers(graph: Graph, cluster: Cluster, dims: Mapping[str, int], costs: Costs) -> list[Layer]:
    """The schedule cut where the top-level module changes; model-level nodes join the next layer."""
    runs: list[tuple[str, list[Node]]] = []
    pending: list[Node] = []
    for node in graph.nodes:
        name = _unit(node.module)
        if not name:
            pending.append(node)
        elif runs and runs[-1][0] == name:
            runs[-1][1].extend([*pending, node])
            pending = []
        else:
            runs.append((name, [*pending, node]))
            pending = []
    if pending:
        runs.append(("", pending)) if not runs else runs[-1][1].extend(pending)
    kinds = {k for m in cluster.machines for k in m.devices}
    out = []
    for name, nodes in runs:
        seconds = {k: sum(node_seconds(n, Placement(cluster.targets[k], k), dims, costs) for n in nodes) for k in kinds}
        params = {v for n in nodes for v in n.operands if v.param is not None}
        out.append(Layer(name, nodes, seconds, sum(nbytes(p, dims) for p in params),
                         sum(nbytes(r, dims) for n in nodes for r in n.results)))
    return out


def _unit(module: str) -> str:
    """`h.3.attn` -> `h.3`; `lm_head` -> `lm_head`: a layer list's item, or a top-level layer."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def crossings(graph: Graph, units: list[Layer], dims: Mapping[str, int]) -> np.ndarray:
    """Bytes that cross the cut after each layer: values made at or before it and read after it."""
    where = {r: i for i, layer in enumerate(units) for n in layer.nodes for r in n.results}
    last: dict[Value, int] = {}
    for i, layer in enumerate(units):
        for n in layer.nodes:
            for v in n.operands:
                if v in where:
                    last[v] = max(last.get(v, 0), i)
    delta = np.zeros(len(units) + 1)
    for v, q in last.items():
        p = where[v]
        if q > p:
            delta[p] += nbytes(v, dims)
            delta[q] -= nbytes(v, dims)
    return np.cumsum(delta)[:len(units)]


@dataclass(frozen=True)
class _Slot:
    machine: str
    kind: str
    index: int
    memory: float


def plan(graph: Graph, cluster: Cluster, dims: Mapping[str, int], micro_batches: int = 8,
         costs: Costs | None = None) -> Plan:
    """The pipeline that minimizes one batch's time on `cluster` (see the module doc); `dims` are
    the shape symbols at one micro-batch."""
    costs = costs or Costs()
    if micro_batches < 1:
        raise ShipeiError(f"micro_batches must be at least 1, got {micro_batches}")
    units = layers(graph, cluster, dims, costs)
    if not units:
        raise ShipeiError(f"{graph.name} has no layers to place")
    cuts = crossings(graph, units, dims)
    n = len(units)
    # Devices, fastest kind first; a pipeline never uses more devices than it has layers.
    speed = {k: costs.devices[k].flops for k in DEVICE_KINDS}
    slots: list[_Slot] = []
    for kind in sorted({k for m in cluster.machines for k in m.devices}, key=lambda k: -speed[k]):
        mine = [_Slot(m.name, kind, i, costs.devices[kind].memory) for m in cluster.machines
                for i in range(m.devices.get(kind, 0))]
        slots += mine[:n]
    seconds = {k: np.concatenate([[0.0], np.cumsum([u.seconds[k] for u in units])]) for k in speed
               if k in units[0].seconds}
    weights = np.concatenate([[0.0], np.cumsum([u.weight_bytes for u in units])])
    act = np.array([u.activation_bytes for u in units])
    first, last = np.triu_indices(n + 1, 1)  # stage = layers first .. last-1
    peak = np.zeros((n + 1, n + 1))
    for i in range(n):  # largest layer activation within each range, for the memory check
        peak[i, i + 1:] = np.maximum.accumulate(act[i:])
    tables = {}
    for slot in {(s.kind, s.memory) for s in slots}:
        kind, memory = slot
        table = np.full((n + 1, n + 1), math.inf)
        stage = seconds[kind][last] - seconds[kind][first] + costs.call_seconds(cluster.targets[kind], kind)
        fits = weights[last] - weights[first] + peak[first, last] <= memory
        table[first, last] = np.where(fits, stage, math.inf)
        tables[slot] = table
    receive = {link: np.concatenate([[0.0], cuts / link]) for link in (cluster.intra, cluster.inter)}
    stages = [_with_receive(tables[slot.kind, slot.memory], receive[_link(slots, j, cluster)])
              for j, slot in enumerate(slots)]
    follows = [_follows(slots, j) for j in range(len(slots))]
    times = np.unique(np.concatenate([t[np.isfinite(t)] for t in stages]))
    best, low, high = None, -math.inf, math.inf
    while True:  # the bounds that occur, on a grid where too many; then the grid cell around the best, finer
        window = times[(times > low) & (times < high)]
        bounds = window
        if window.size > BOUNDS:  # a geometric grid of the possible slowest stages, each one that occurs
            grid = np.geomspace(window[0], window[-1], BOUNDS)
            bounds = np.unique(window[np.minimum(np.searchsorted(window, grid), window.size - 1)])
        found = _cuts(stages, follows, n, bounds)
        if found is None:
            break
        sums, chosen = found
        objective = [total + (micro_batches - 1) * max(t for _, _, _, t in cut) if cut else math.inf
                     for total, cut in zip(sums, chosen)]
        i = int(np.argmin(objective))
        if best is None or objective[i] < best[0]:
            best = (objective[i], chosen[i])
        if bounds.size == window.size:
            break
        low, high = (bounds[i - 1] if i else -math.inf), (bounds[i + 1] if i + 1 < bounds.size else math.inf)
    if best is None:
        raise ShipeiError(f"{graph.name} does not fit this cluster: some layer is larger than every device's memory",
                          hint="add devices with more memory, or shrink the micro-batch")
    best = best[1]
    planned = []
    for a, b, j, _ in best:
        slot = slots[j]
        t = (seconds[slot.kind][b] - seconds[slot.kind][a] + costs.call_seconds(cluster.targets[slot.kind], slot.kind)
             + (cuts[a - 1] / _link(slots, j, cluster) if a else 0.0))
        planned.append(PlannedStage([u.name for u in units[a:b]], slot.machine,
                                    Placement(cluster.targets[slot.kind], slot.kind, slot.index), t,
                                    weights[b] - weights[a] + peak[a, b],
                                    cuts[a - 1] if a else 0.0))
    total = sum(s.seconds for s in planned) + (micro_batches - 1) * max(s.seconds for s in planned)
    return Plan(planned, micro_batches, total, cluster.devices)


def _follows(slots: list[_Slot], j: int) -> bool:
    """Whether slot j is the next device of the same kind on the machine of slot j - 1."""
    return j > 0 and (slots[j - 1].machine, slots[j - 1].kind) == (slots[j].machine, slots[j].kind)


def _link(slots: list[_Slot], j: int, cluster: Cluster) -> float:
    """What slot j receives over: its machine's link when it follows slot j - 1 (which then ran the
    stage before, see `_cuts`), else the link between machines (the first of its kind on its machine)."""
    return cluster.intra if _follows(slots, j) else cluster.inter


def _with_receive(table: np.ndarray, receive: np.ndarray) -> np.ndarray:
    """A slot's stage times with receiving what crosses into it; the first stage receives the
    pipeline's inputs, not a cut."""
    stage = table + receive[:, None]
    stage[0, :] = table[0, :]
    return stage


def _cuts(stages: list[np.ndarray], follows: list[bool], n: int, bounds: np.ndarray
          ) -> tuple[list[float], list[list[tuple[int, int, int, float]]]] | None:
    """For each bound on the slowest stage, the least sum of stage times covering the n layers:
    a dynamic programme over the slots in order, each running one stage or none, for every bound
    at once (F[b, l] = the least sum for the first l layers under bound b). A slot that `follows`
    the one before it (the next device of the same machine) runs a stage only right after that
    slot's: a machine's devices are taken in order, so that what a stage receives over (`_link`)
    is known. Returns the sums and, per bound, the stages as (first layer, end, slot, seconds);
    None if no bound is feasible."""
    k = len(bounds)
    best = np.full((k, n + 1), math.inf)
    best[:, 0] = 0.0
    owner = np.full((k, n + 1), -1)  # the slot whose stage ends the best F[b, l]
    starts, owners, used = [], [], best
    for j, stage in enumerate(stages):
        allowed = np.where(stage[None] <= bounds[:, None, None], stage[None], math.inf)
        total = (used if follows[j] else best)[:, :, None] + allowed
        if follows[j]:
            total[:, 0, :] = math.inf  # it cannot run the first stage: its predecessor ran one
        start = np.argmin(total, axis=1)
        used = np.take_along_axis(total, start[:, None, :], axis=1)[:, 0, :]
        better = used < best
        best, owner = np.where(better, used, best), np.where(better, j, owner)
        starts.append(start)
        owners.append(owner)
    if not np.isfinite(best[:, n]).any():
        return None
    sums, chosen = [], []
    for b in range(k):
        if not np.isfinite(best[b, n]):
            sums.append(math.inf)
            chosen.append([])
            continue
        cut, end, j = [], n, int(owner[b, n])
        while end > 0:
            begin = int(starts[j][b, end])
            cut.append((begin, end, j, float(stages[j][begin, end])))
            end, j = begin, (j - 1 if follows[j] else int(owners[j - 1][b, begin]) if j else -1)
        sums.append(float(best[b, n]))
        chosen.append(cut[::-1])
    return sums, chosen
