"""Property-based testing of lowering correctness: random models, their inputs, and the check.

    from hypothesis import given
    from shipei.testing import graphs, assert_lowering_correct

    @given(graphs(max_nodes=6))
    def test_jax_lowers_correctly(g):
        assert_lowering_correct(g, targets=["jax"])

`graphs()` draws well-typed graphs from the op registry, `programs()` the same as DSL source,
`inputs_for(graph)` inputs inside every op's domain. `assert_lowering_correct` runs the numpy
reference and each target and raises `LoweringMismatch`, whose message is a bug report: the
(minimized) DSL program, the inputs' seed, the target and the worst element.
"""

from .lowering import LoweringMismatch, assert_lowering_correct, available_targets
from .strategies import graphs, inputs_for, make_inputs, programs

__all__ = ["LoweringMismatch", "assert_lowering_correct", "available_targets", "graphs", "inputs_for",
           "make_inputs", "programs"]
