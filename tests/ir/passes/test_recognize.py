"""recognize: matmul(x, transpose(W)) [+ b] -> linear, and the attention chain -> attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pass_testing import after, assert_preserves, idempotent, run
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.parser import parse_ir
from shipei.ir.types import DType, Sym, TensorType

import shipei
from shipei.testing import graphs

LINEAR = """\
graph @G(%x: f32[B, 3], %w: param f32[2, 3] = zeros(), %b: param f32[2] = zeros()) -> (f32[B, 2], f32[B, 2]) {
  %0 = transpose(%w) {perm = [1, 0]} : f32[3, 2]
  %1 = matmul(%x, %0) : f32[B, 2]
  %2 = add(%b, %1) : f32[B, 2]
  %3 = matmul(%x, %0) : f32[B, 2]
  return %2, %3
}
"""

LINEAR_AFTER = """\
graph @G(%x: f32[B, 3], %w: param f32[2, 3] = zeros(), %b: param f32[2] = zeros()) -> (f32[B, 2], f32[B, 2]) {
  %0 = linear(%x, %w, %b) : f32[B, 2]
  %1 = linear(%x, %w) : f32[B, 2]
  return %0, %1
}
"""

# What the prelude's MultiHeadAttention(causal=true) leaves after -O1, per head [B, 2, T, 4].
ATTENTION = """\
graph @G(%q: f32[B, 2, T, 4], %k: f32[B, T, 2, 4], %v: f32[B, 2, T, 4]) -> (f32[B, 2, T, 4]) {
  %0 = transpose(%k) {perm = [0, 2, 3, 1]} : f32[B, 2, 4, T]
  %1 = matmul(%q, %0) : f32[B, 2, T, T]
  %2 = constant() {value = array<0.5>, dtype = f32} : f32[]
  %3 = mul(%1, %2) : f32[B, 2, T, T]
  %4 = iota() {length = T, dtype = i64} : i64[T]
  %5 = reshape(%4) {shape = [T, 1]} : i64[T, 1]
  %6 = reshape(%4) {shape = [1, T]} : i64[1, T]
  %7 = lt(%5, %6) : bool[T, T]
  %8 = constant() {value = array<-inf>, dtype = f32} : f32[]
  %9 = where(%7, %8, %3) : f32[B, 2, T, T]
  %10 = softmax(%9) {axis = -1} : f32[B, 2, T, T]
  %11 = matmul(%10, %v) : f32[B, 2, T, 4]
  return %11
}
"""

ATTENTION_AFTER = """\
graph @G(%q: f32[B, 2, T, 4], %k: f32[B, T, 2, 4], %v: f32[B, 2, T, 4]) -> (f32[B, 2, T, 4]) {
  %0 = transpose(%k) {perm = [0, 2, 1, 3]} : f32[B, 2, T, 4]
  %1 = attention(%q, %0, %v) {scale = 0.5, causal = true} : f32[B, 2, T, 4]
  return %1
}
"""


def test_golden_linear() -> None:
    """With and without the bias, the add on either side; the shared transpose goes with dce."""
    assert after(LINEAR, "recognize", "dce") == LINEAR_AFTER
    assert idempotent(LINEAR, "recognize", "dce")


def test_golden_attention() -> None:
    assert after(ATTENTION, "recognize", "dce") == ATTENTION_AFTER
    assert idempotent(ATTENTION, "recognize", "dce")


def test_an_add_of_a_result_of_a_many_result_op_is_left_alone() -> None:
    """Found by `shipei fuzz -O3`: the add rule asked a split for its one result and crashed."""
    text = """graph @G(%x: f32[3, 2]) -> (f32[3, 1]) {
  %0, %1 = split(%x) {sizes = [1, 1], axis = -1} : f32[3, 1], f32[3, 1]
  %2 = add(%1, %1) : f32[3, 1]
  return %2
}
"""
    assert after(text, "recognize") == after(text)


def test_a_mask_that_is_not_causal_is_left_alone() -> None:
    for original, changed in (("lt(%5, %6)", "le(%5, %6)"), ("lt(%5, %6)", "lt(%6, %5)"),
                              ("value = array<-inf>", "value = array<-1.0>")):
        text = ATTENTION.replace(original, changed)
        assert "attention" not in after(text, "recognize", "dce")


def test_the_mirrored_mask_and_a_kept_branch_are_causal_too() -> None:
    mirrored = ATTENTION.replace("lt(%5, %6)", "gt(%6, %5)")
    assert after(mirrored, "recognize", "dce") == ATTENTION_AFTER
    keep = ATTENTION.replace("lt(%5, %6)", "ge(%5, %6)").replace("where(%7, %8, %3)", "where(%7, %3, %8)")
    assert after(keep, "recognize", "dce") == ATTENTION_AFTER


def test_an_intermediate_read_elsewhere_keeps_the_pattern() -> None:
    """Returning the attention weights too: fusing would compute the scores twice."""
    text = ATTENTION.replace("-> (f32[B, 2, T, 4])", "-> (f32[B, 2, T, 4], f32[B, 2, T, T])").replace(
        "return %11", "return %11, %10")
    assert "attention" not in after(text, "recognize", "dce")


def _attention_graph(rank: int, causal: bool, scale_op: str, length: int, source: int, depth: int) -> Graph:
    g = Graph("A")
    b = Builder(g)
    batch = (Sym.named("B"),) + (2,) * (rank - 3)
    q = b.input("q", TensorType(DType.f32, batch + (length, depth)))
    k = b.input("k", TensorType(DType.f32, batch + (source, depth)))
    v = b.input("v", TensorType(DType.f32, batch + (source, 3)))
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    scores = b("matmul", q, b("transpose", k, perm=perm))
    if scale_op:
        scores = b(scale_op, scores, b("constant", value=0.7, dtype=DType.f32))
    if causal:
        rows = b("reshape", b("iota", length=length, dtype=DType.i64), shape=(length, 1))
        cols = b("iota", length=source, dtype=DType.i64)
        scores = b("where", b("lt", rows, cols), b("constant", value=float("-inf"), dtype=DType.f32), scores)
    g.outputs = [b("matmul", b("softmax", scores, axis=-1), v)]
    return g


@given(st.integers(3, 4), st.booleans(), st.sampled_from(["", "mul", "div"]), st.integers(1, 5),
       st.integers(1, 5), st.integers(1, 4))
def test_attention_keeps_meaning(rank, causal, scale_op, length, source, depth) -> None:
    g = _attention_graph(rank, causal, scale_op, length, source, depth)
    out = assert_preserves(g, ["recognize", "dce"])
    assert [n.op for n in out.nodes if n.op not in ("transpose",)] == ["attention"]


@given(graphs(max_nodes=8))
def test_keeps_meaning_on_random_graphs(g) -> None:
    assert_preserves(g, ["recognize", "dce"])


def test_linear_on_int_and_batched_activations() -> None:
    g = Graph("L")
    b = Builder(g)
    x = b.input("x", TensorType(DType.i32, (2, 3, 4)))
    w = b.add_param("w", TensorType(DType.i32, (5, 4)), Init("zeros"))
    g.outputs = [b("matmul", x, b("transpose", w, perm=(1, 0)))]
    out, _ = run(g, ["recognize", "dce"], {"w": np.arange(20, dtype=np.int32).reshape(5, 4)})
    assert [n.op for n in out.nodes] == ["linear"]
    assert_preserves(g, ["recognize", "dce"])


def test_examples_at_o2_use_linear_and_attention() -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    ops = {n.op for n in shipei.compile(examples / "transformer.sp", "torch", opt=2).ir.nodes}
    assert {"linear", "attention"} <= ops and "matmul" not in ops and "softmax" not in ops
    parse_ir(str(shipei.compile(examples / "mlp.sp", "torch", opt=2).ir))  # prints and parses back


CONV_BIAS = """\
graph @G(%x: f32[B, 2, 5, 5], %w: param f32[3, 2, 3, 3] = zeros(), %b: param f32[3] = zeros(),
         %c: param f32[3, 1, 1] = zeros()) -> (f32[B, 3, 3, 3], f32[B, 3, 3, 3], f32[B, 3, 3, 3], f32[B, 3, 3, 3]) {
  %0 = conv2d(%x, %w) : f32[B, 3, 3, 3]
  %1 = reshape(%b) {shape = [3, 1, 1]} : f32[3, 1, 1]
  %2 = add(%1, %0) : f32[B, 3, 3, 3]
  %3 = conv2d(%x, %w) : f32[B, 3, 3, 3]
  %4 = add(%3, %c) : f32[B, 3, 3, 3]
  %5 = conv2d(%x, %w) : f32[B, 3, 3, 3]
  %6 = add(%5, %1) : f32[B, 3, 3, 3]
  return %2, %4, %6, %5
}
"""


def test_a_convolutions_bias_add_becomes_its_bias_operand() -> None:
    """The prelude's reshaped vector on either side; a [C, 1, 1] param is no vector, and a
    convolution read elsewhere too keeps its add."""
    out, _ = run(parse_ir(CONV_BIAS), ["recognize", "dce"])
    convs = [n for n in out.nodes if n.op == "conv2d"]
    assert [len(n.operands) for n in convs] == [3, 2, 2]
    assert convs[0].operands[2].name == "b"
    assert_preserves(parse_ir(CONV_BIAS), ["recognize", "dce"])
    assert idempotent(CONV_BIAS, "recognize", "dce")


def test_the_examples_convolutions_take_their_bias_at_o2() -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    graph = shipei.compile(examples / "digits_cnn.sp", "torch", opt=2).ir
    assert [len(n.operands) for n in graph.nodes if n.op == "conv2d"] == [3, 3]
    assert "add" not in {n.op for n in graph.nodes}
