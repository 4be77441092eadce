"""Property-based testing of lowering correctness: random models, their inputs, and the check.

    from hypothesis import given
    from shipei.testing import graphs, assert_lowering_correct

    @given(graphs(max_nodes=6))
    def test_jax_lowers_correctly(g):
        assert_lowering_correct(g, targets=["jax"])

`graphs()` draws well-typed graphs from the op registry, `programs()` the same as DSL source,
`inputs_for(graph)` inputs inside every op's domain, `placements(graph)` a placement per node
for `assert_lowering_correct(graph, placements=...)`, which runs the graph partitioned over the
frameworks as a pipeline. `assert_lowering_correct` runs the numpy
reference and each target and raises `LoweringMismatch`, whose message is a bug report: the
(minimized) DSL program, the inputs' seed, the target and the worst element.
"""

from .lowering import HETERO, LoweringMismatch, assert_lowering_correct, available_targets
from .strategies import graphs, inputs_for, make_inputs, placements, programs

__all__ = ["HETERO", "LoweringMismatch", "assert_lowering_correct", "available_targets", "graphs", "inputs_for",
           "make_inputs", "placements", "programs"]
