"""plan-memory: liveness, in-place reuse and size classes; naive vs planned peak bytes."""

from __future__ import annotations

from hypothesis import given
from pass_testing import run
from shipei.ir.parser import parse_ir
from shipei.ir.passes.context import PassSettings
from shipei.ir.passes.manager import PassContext, run_passes
from shipei.ir.passes.plan_memory import plan_memory, size_class
from shipei.ir.passes.rewrite import elements

from shipei.testing import graphs

CHAIN = """graph @Chain(%x: f32[B, 256]) -> (f32[B, 256], f32[B, 512]) {
  %0 = exp(%x) : f32[B, 256]
  %1 = neg(%0) : f32[B, 256]
  %2 = mul(%0, %1) : f32[B, 256]
  %3 = reshape(%2) {shape = [B, 256]} : f32[B, 256]
  %4 = concat(%3, %3) {axis = 1} : f32[B, 512]
  %5 = tanh(%3) : f32[B, 256]
  return %5, %4
}"""


def test_chain_reuses_buffers() -> None:
    graph = parse_ir(CHAIN)
    plan = plan_memory(graph, {"B": 4})
    kb = 4 * 256 * 4  # one [4, 256] f32 activation
    # exp in A; neg in B (exp is still read); mul in place in A, freeing B; reshape takes B, freeing A;
    # concat needs a new 2 KB buffer; tanh writes in place over the reshape in B.
    a, b, c = 0, 1, 2
    assert [plan.assignment[r] for n in graph.nodes for r in n.results] == [a, b, a, b, c, b]
    assert plan.buffers == [kb, kb, 2 * kb]
    assert (plan.naive_bytes, plan.planned_bytes, plan.peak_live_bytes) == (7 * kb, 4 * kb, 3 * kb)
    assert plan.summary() == ("activations: naive 28,672 B, planned 16,384 B (0.57x) in 3 buffers, "
                              "live peak 12,288 B")
    # an eager program allocates each result anew: at tanh, the reshape, the concat and tanh are live
    assert plan.peak_fresh_bytes == 4 * kb and plan.workspace_bytes == 0


def test_symbols_default_to_one_and_come_from_options() -> None:
    graph = parse_ir(CHAIN)
    ctx = PassContext(settings=PassSettings(dims={"B": 8}))
    run_passes(graph, ["plan-memory"], ctx)
    assert ctx.results.memory_plan.dims == {"B": 8}
    assert plan_memory(graph).naive_bytes == plan_memory(graph, {"B": 1}).naive_bytes


def test_size_classes() -> None:
    assert [size_class(n) for n in (1, 64, 65, 100, 1000, 1024, 1025, 4096 * 3)] == [
        64, 64, 80, 112, 1024, 1024, 1280, 12288]  # four classes per power of two


@given(graphs(max_nodes=10))
def test_plan_is_sound(graph) -> None:
    """Values alive at once never share a buffer, and a buffer fits every value in it."""
    out, ctx = run(graph, ["plan-memory"], dims={"B": 3})
    plan = ctx.results.memory_plan
    order = {r: i for i, n in enumerate(out.nodes) for r in n.results}
    last = {v: max([i for i, n in enumerate(out.nodes) if v in n.operands] +
                   [len(out.nodes) if v in out.outputs else order[v]]) for v in plan.assignment}
    for v, buf in plan.assignment.items():
        assert plan.buffers[buf] == size_class(elements(v.type, plan.dims) * v.dtype.itemsize)
        for u, other in plan.assignment.items():
            if u is not v and buf == other and order[u] < order[v]:
                assert last[u] <= order[v], "a buffer is reused while its value is alive"
    assert plan.peak_live_bytes <= plan.planned_bytes or not plan.buffers
