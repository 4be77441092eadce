"""What a compiled model needs in memory at given shape symbols: its weights, its inputs and the
activations of the memory plan (plan-memory), so that a batch size can be checked against a
device before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..ir.errors import ShipeiError
from ..ir.graph import Graph
from ..ir.passes.plan_memory import MemoryPlan, plan_memory
from ..ir.passes.rewrite import elements


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model holds at `dims`: weights and inputs as they are, activations as planned."""

    dims: dict[str, int]
    weights_bytes: int
    inputs_bytes: int
    activations: MemoryPlan

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.inputs_bytes + self.activations.planned_bytes

    def __str__(self) -> str:
        at = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return (f"memory{' at ' + at if at else ''}: weights {_size(self.weights_bytes)} + inputs "
                f"{_size(self.inputs_bytes)} + activations {_size(self.activations.planned_bytes)} (planned; "
                f"naive {_size(self.activations.naive_bytes)}) = {_size(self.total_bytes)}")


def estimate_memory(graph: Graph, dims: Mapping[str, int]) -> MemoryEstimate:
    """The estimate for `graph` with its shape symbols bound to `dims`; every symbol of its inputs
    needs a value."""
    symbols = graph.symbols()
    unknown = sorted(set(dims) - set(symbols))
    missing = [s for s in symbols if s not in dims]
    if unknown or missing:
        raise ShipeiError(f"{graph.name}: memory estimate needs a value for each shape symbol "
                          f"({', '.join(symbols) or 'none'})"
                          + (f"; unknown {', '.join(unknown)}" if unknown else "")
                          + (f"; missing {', '.join(missing)}" if missing else ""),
                          hint="e.g. estimate_memory(B=8)" if missing else None)
    env = {s: int(dims[s]) for s in symbols}
    weights = sum(elements(p.type, env) * p.dtype.itemsize for p in graph.params)
    inputs = sum(elements(v.type, env) * v.dtype.itemsize for v in graph.inputs)
    return MemoryEstimate(env, weights, inputs, plan_memory(graph, env))


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes} B"
