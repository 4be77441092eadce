"""A partitioned graph as a pipeline: its stages, each a standalone graph, and what each reads.

The partition pass leaves every node placed and a `transfer` node wherever a value changes
placement. A stage is a maximal run of the schedule on one placement (`ir.region`); it reads the
pipeline's inputs and earlier stages' outputs, and is compiled on its own by its target's
generator. The transfers say where a runtime hands a tensor from one framework to another; the
plan records the same thing as each stage's reads, so a driver needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ShipeiError
from .graph import Graph, Value
from .passes.rewrite import clone
from .placement import Placement
from .region import Region, region_graph, regions
from .types import Sym, dim_symbols

#: Where a stage or the pipeline gets a value: ("input", i), the pipeline's input i, or
#: (stage, j), output j of an earlier stage.
Ref = tuple[str, int] | tuple[int, int]


@dataclass
class Stage:
    """One stage: its placement, its standalone graph, and, per input of that graph, where the
    value comes from."""

    index: int
    placement: Placement
    graph: Graph
    reads: list[Ref]
    modules: list[str]  # the layers it computes, for people (`h.0`, `h.1.attn`)


@dataclass
class PipelinePlan:
    stages: list[Stage]
    outputs: list[Ref]  # where each of the graph's outputs comes from


def plan_pipeline(graph: Graph) -> PipelinePlan:
    """The stages of a partitioned graph (every node placed) and the data flow between them."""
    if any(n.placement is None or not n.placement.full for n in graph.nodes):
        raise ShipeiError(f"{graph.name} is not partitioned: every node needs a full placement",
                          hint="run the partition pass first")
    flat = _without_transfers(graph)
    runs = regions(flat, lambda n: n.placement)
    made: dict[Value, Ref] = {v: ("input", i) for i, v in enumerate(flat.inputs)}
    stages = []
    for k, run in enumerate(runs):
        part, sources = region_graph(flat, run, f"{graph.name}_stage{k}")
        _bind_symbols(part, sources, flat)
        reads = []
        for v, source in zip(part.inputs, sources):
            if source not in made:
                raise ShipeiError(f"stage {k} of {graph.name} reads a value no earlier stage makes")
            reads.append(made[source])
            if made[source][0] != "input":
                v.name = f"s{made[source][0]}_{made[source][1]}"  # output j of stage s
        made.update({v: (k, j) for j, v in enumerate(run.outputs)})
        stages.append(Stage(k, run.key, part, reads, _modules(run)))
    for v in flat.outputs:
        if v not in made:  # a param returned as it is: the last stage returns it too
            if not stages:
                raise ShipeiError(f"{graph.name} only returns its params; there is nothing to run")
            last = stages[-1].graph
            param = next((p for p in last.params if p.name == v.name), None)
            if param is None:
                param = Value(v.type, v.name, param=v.param)
                last.params.append(param)
            last.outputs.append(param)
            made[v] = (len(stages) - 1, len(last.outputs) - 1)
    return PipelinePlan(stages, [made[v] for v in flat.outputs])


def _bind_symbols(part: Graph, sources: list[Value], flat: Graph) -> None:
    """A stage whose values' shapes name a symbol its inputs do not declare (an `arange(B)` placed
    apart from every value of shape [B]) reads, besides, a pipeline input that declares it."""
    declared = set(part.symbols())
    used = {s for n in part.nodes for r in n.results for d in r.shape for s in dim_symbols(d)}
    for symbol in sorted(used - declared):
        source = min((v for v in flat.inputs if any(symbol in dim_symbols(d) for d in v.shape)),
                     key=lambda v: Sym.named(symbol) not in v.shape)  # one that has it as a dim of its own first
        part.inputs.append(Value(source.type, source.name))
        sources.append(source)


def _without_transfers(graph: Graph) -> Graph:
    """A copy of the graph that reads each transferred value where it was made: the stages' data
    flow, which is what the transfers record."""
    flat = clone(graph)
    handed = {n.result: n.operands[0] for n in flat.nodes if n.op == "transfer"}
    flat.nodes = [n for n in flat.nodes if n.op != "transfer"]
    for node in flat.nodes:
        node.operands = [handed.get(v, v) for v in node.operands]
    flat.outputs = [handed.get(v, v) for v in flat.outputs]
    return flat


def _modules(run: Region) -> list[str]:
    """The top two levels of the layers a stage computes (`h.0`, `lm_head`), in order."""
    return list(dict.fromkeys(".".join(n.module.split(".")[:2]) for n in run.nodes if n.module))
