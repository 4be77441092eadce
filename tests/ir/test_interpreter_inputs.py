"""The reference interpreter on inputs that are valid but unusual: arrays laid out with negative
or transposed strides, and dims of length 0 (a sequence of no tokens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from shipei.ir.graph import Builder, Graph
from shipei.ir.interpreter import coerce_input, empty_arrays, interpret
from shipei.ir.types import DType, Sym, TensorType

import shipei

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_inputs_are_made_c_contiguous_only_when_they_are_not() -> None:
    g = Graph("G")
    x = Builder(g).input("x", TensorType(DType.f32, (Sym.named("B"), 3)))
    base = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert coerce_input(x, base) is base
    for strided in (base[::-1], base[:, ::-1], base.T.copy().T, base[::2]):
        out = coerce_input(x, strided)
        assert out.flags.c_contiguous and np.array_equal(out, strided)
    assert coerce_input(x, base[::-1].astype(np.float64)).flags.c_contiguous


def test_a_sequence_of_length_zero_through_the_transformer() -> None:
    """Attention's softmax then reduces along an empty axis, which numpy refuses; results of no
    elements are not computed."""
    graph = shipei.parse(EXAMPLES / "transformer.sp", vocab=16, d_model=8, n_heads=2, n_layers=1, max_len=8)
    for precision in ("declared", "f64"):
        (logits,) = shipei.reference(graph, [np.zeros((2, 0), np.int64)], precision=precision)
        assert logits.shape == (2, 0, 16)
    (logits,) = shipei.reference(graph, [np.zeros((0, 3), np.int64)])
    assert logits.shape == (0, 3, 16)


def test_a_reduction_over_an_empty_axis_is_still_computed() -> None:
    """Only results of no elements are skipped: a sum over an empty axis is 0."""
    g = Graph("S")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (2, Sym.named("T"))))
    g.outputs = [b("reduce_sum", x, axes=(1,))]
    (total,) = interpret(g, [np.zeros((2, 0), np.float32)], {})
    assert total.tolist() == [0.0, 0.0]
    assert empty_arrays(g.outputs, {"T": 0}) is None
    assert [a.shape for a in empty_arrays(g.inputs, {"T": 0})] == [(2, 0)]
