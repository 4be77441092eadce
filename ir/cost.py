"""The partitioner's cost model: how long a node takes at a placement, and a value to cross to another.

Analytic, a roofline per node: max(FLOPs / the device's peak, bytes moved / its memory bandwidth),
plus the framework's dispatch cost per op. A value crossing placements costs a latency plus its
bytes over the link between them: nothing within one framework on one device, a DLPack hand-off
(no copy) between frameworks sharing a device, a copy through host memory where DLPack cannot
carry the dtype, PCIe between a device and the host. A measured profile (`ir.profile`, from
`shipei bench --profile`) replaces these figures for the nodes and calls it covers.

Accelerator figures are from their data sheets (dense, no sparsity):
- NVIDIA H100 SXM5: 66.9 TFLOP/s f32 (494.7 TF32, 989.4 bf16/f16 on tensor cores), 3.35 TB/s HBM3,
  80 GB; PCIe Gen5 x16 64 GB/s each way, NVLink 450 GB/s each way (NVIDIA H100 Tensor Core GPU
  data sheet).
- Google TPU v5e: 197 TFLOP/s bf16, 16 GB HBM2 at 819 GB/s (cloud.google.com/tpu/docs/v5e); f32
  matmuls at full precision take six bf16 passes.
- Huawei Ascend 910B: about 320 TFLOP/s f16, 64 GB HBM2e at 1.6 TB/s, as reported (Huawei
  publishes no per-chip data sheet); f32 at a quarter of f16, as on the 910.
CPU figures were measured on this machine (2 cores), `python benchmarks/hetero.py --roofline`, three
runs: torch's 2048^3 matmul 94-96 GFLOP/s f32 and 203-205 bf16 on one core (179-184 and 412-417 on
both), a 256 MiB copy 24-25 GB/s read plus written on one core (32-33 on both). A CPU device here is
one core, as the runtime runs a stage: pinned to it, with one intra-op thread. Per extra op of a
generated 201-op matmul chain on one core: torch 1.1 us, jax 0.5, tf 0.8, MindSpore 15. A call
also costs a fixed part (torch 4.5 us, jax 7, tf 175, MindSpore 0.9-1.1 ms): the pipeline
planner counts it per stage; the partitioner, which weighs nodes, leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .graph import Node, Value
from .placement import Placement
from .profile import Profile
from .registry import FusionKind, get_op
from .types import LOW_PRECISION, DType, concrete_shape


@dataclass(frozen=True)
class DeviceKind:
    """Peak FLOP/s (f32, and 16-bit floats on the matrix units) and memory bandwidth in bytes/s."""

    flops: float
    low_precision_flops: float
    bandwidth: float
    memory: float


@dataclass(frozen=True)
class Link:
    """What a value pays to cross: `latency` seconds plus bytes / `bandwidth`; `copies` says whether
    the bytes are copied (False: a DLPack hand-off of the same memory)."""

    kind: str
    latency: float
    bandwidth: float
    copies: bool

    def seconds(self, nbytes: float) -> float:
        return self.latency + (nbytes / self.bandwidth if self.copies else 0.0)


#: The host side of every link: numpy arrays in and out of a pipeline live here.
HOST = Placement(None, "cpu")


@dataclass(frozen=True)
class Costs:
    """The figures the partitioner weighs; the defaults are this module's table."""

    devices: Mapping[str, DeviceKind] = field(default_factory=lambda: {
        # one core: the runtime pins each stage to a core of its own, with one intra-op thread
        "cpu": DeviceKind(flops=9.4e10, low_precision_flops=2.0e11, bandwidth=2.4e10, memory=24 * 2**30),
        "cuda": DeviceKind(flops=66.9e12, low_precision_flops=989.4e12, bandwidth=3.35e12, memory=80e9),
        "tpu": DeviceKind(flops=197e12 / 6, low_precision_flops=197e12, bandwidth=819e9, memory=16e9),
        "ascend": DeviceKind(flops=80e12, low_precision_flops=320e12, bandwidth=1.6e12, memory=64e9),
    })
    #: Seconds each framework spends dispatching one op, measured on this machine's CPU; an
    #: accelerator adds a kernel launch of about 5 us.
    dispatch: Mapping[str, float] = field(default_factory=lambda: {
        "torch": 1.1e-6, "jax": 0.5e-6, "tf": 0.8e-6, "mindspore": 15e-6})
    #: Seconds each framework's generated program costs per call beyond its ops (the one-op
    #: programs of `benchmarks/hetero.py --roofline`); the planner adds it once per stage.
    call: Mapping[str, float] = field(default_factory=lambda: {
        "torch": 4.5e-6, "jax": 7e-6, "tf": 175e-6, "mindspore": 1e-3})
    launch: float = 5e-6
    #: A DLPack hand-off between two frameworks on one device (no copy), and a copy through host memory.
    dlpack: Link = Link("dlpack", latency=20e-6, bandwidth=math.inf, copies=False)
    host_copy: Link = Link("host copy", latency=20e-6, bandwidth=1.0e10, copies=True)
    pcie: Link = Link("pcie", latency=10e-6, bandwidth=64e9, copies=True)
    nvlink: Link = Link("nvlink", latency=5e-6, bandwidth=450e9, copies=True)
    #: (target, dtype) pairs DLPack does not carry into or out of that framework: such values are
    #: copied through host memory.
    no_dlpack: frozenset[tuple[str, DType]] = frozenset({("mindspore", DType.bool)})
    #: (source, destination) targets where DLPack hands over the memory but the destination copies
    #: it anyway: XLA takes only 64-byte aligned buffers, and MindSpore's results never are.
    unaligned: frozenset[tuple[str, str]] = frozenset({("mindspore", "jax")})
    #: Measured seconds (`shipei bench --profile`) that replace the figures above where they cover a
    #: node or a call.
    profile: Profile | None = None

    def call_seconds(self, target: str, device: str) -> float:
        """What a call of a program of `target` on `device` costs beyond its nodes."""
        measured = self.profile.call.get(f"{target}:{device}") if self.profile is not None else None
        return self.call[target] if measured is None else measured


def flops(node: Node, dims: Mapping[str, int]) -> float:
    """FLOPs of one application of `node` with its shape symbols at `dims`: the op's own rule, or one
    per result element for elementwise ops, one per operand element for reductions, four per
    operand element for other opaque ops, none for ops that only move data."""
    opdef = get_op(node.op)
    operands = [concrete_shape(v.shape, dims) for v in node.operands]
    results = [concrete_shape(v.shape, dims) for v in node.results]
    if opdef.flops is not None:
        return float(opdef.flops(operands, results, node.attrs))
    if opdef.fusion in (FusionKind.ELEMWISE, FusionKind.BROADCAST):
        return float(sum(math.prod(s) for s in results))
    if opdef.fusion is FusionKind.REDUCTION:
        return float(math.prod(operands[0]))
    if opdef.fusion is FusionKind.INJECTIVE:
        return 0.0
    return 4.0 * sum(math.prod(s) for s in operands)


def format_bytes(n: float) -> str:
    """`512 B`, `16.0 KiB`, `1.5 MiB`."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def nbytes(value: Value, dims: Mapping[str, int]) -> float:
    return float(math.prod(concrete_shape(value.shape, dims)) * value.dtype.itemsize)


def node_seconds(node: Node, placement: Placement, dims: Mapping[str, int], costs: Costs) -> float:
    """The measured time of `node` at `placement` where the profile has it, else its roofline time
    plus the framework's dispatch."""
    if costs.profile is not None:
        measured = costs.profile.seconds(node, f"{placement.target}:{placement.device}", dims)
        if measured is not None:
            return measured
    return analytic_seconds(node, placement, dims, costs)


def analytic_seconds(node: Node, placement: Placement, dims: Mapping[str, int], costs: Costs) -> float:
    """The roofline time of `node` at `placement`, plus the framework's dispatch."""
    device = costs.devices[placement.device]
    low = any(v.dtype in LOW_PRECISION for v in node.results)
    peak = device.low_precision_flops if low else device.flops
    moved = sum(nbytes(v, dims) for v in (*node.operands, *node.results))
    launch = costs.launch if placement.device != "cpu" else 0.0
    return max(flops(node, dims) / peak, moved / device.bandwidth) + costs.dispatch[placement.target] + launch


def link(source: Placement, destination: Placement, dtype: DType, costs: Costs) -> Link | None:
    """How a value of `dtype` goes from `source` to `destination`; None when it stays (one target on
    one device). The host is `HOST`, numpy's side."""
    if source == destination:
        return None
    # the host's cores share one memory; an accelerator's index is a device of its own
    same_device = source.device == destination.device and (
        source.device == "cpu" or (source.index or 0) == (destination.index or 0))
    if same_device:
        carried = all((t, dtype) not in costs.no_dlpack for t in (source.target, destination.target) if t)
        aligned = (source.target, destination.target) not in costs.unaligned
        return costs.dlpack if carried and aligned else costs.host_copy
    if source.device == "cuda" and destination.device == "cuda":
        return costs.nvlink
    if "cpu" in (source.device, destination.device):
        return costs.pcie
    return Link("via host", 2 * costs.pcie.latency, costs.pcie.bandwidth / 2, copies=True)


def transfer_seconds(value: Value, source: Placement, destination: Placement, dims: Mapping[str, int],
                     costs: Costs) -> float:
    way = link(source, destination, value.dtype, costs)
    return 0.0 if way is None else way.seconds(nbytes(value, dims))
