"""fuse: TVM's fusion rules by fusion kind, a size limit, no cycles, contiguous printable regions."""

from __future__ import annotations

import pytest
from hypothesis import given
from pass_testing import after, assert_preserves, idempotent
from shipei.ir.errors import ShipeiError
from shipei.ir.parser import parse_ir
from shipei.ir.registry import FusionKind, get_op
from shipei.ir.verifier import verify

from shipei.testing import graphs

MLP = """\
graph @MLP(%x: f32[B, 784], %w1: param f32[784, 256] = zeros(), %b1: param f32[256] = zeros(), \
%w2: param f32[256, 10] = zeros(), %b2: param f32[10] = zeros()) -> (f32[B, 10]) {
  %0 = matmul(%x, %w1) : f32[B, 256]
  %1 = add(%0, %b1) : f32[B, 256]
  %2 = relu(%1) : f32[B, 256]
  %3 = matmul(%2, %w2) : f32[B, 10]
  %4 = add(%3, %b2) : f32[B, 10]
  %5 = softmax(%4) {axis = 1} : f32[B, 10]
  return %5
}
"""

MLP_FUSED = """\
graph @MLP(%x: f32[B, 784], %w1: param f32[784, 256] = zeros(), %b1: param f32[256] = zeros(), \
%w2: param f32[256, 10] = zeros(), %b2: param f32[10] = zeros()) -> (f32[B, 10]) {
  group 0 {
    %0 = matmul(%x, %w1) : f32[B, 256]
    %1 = add(%0, %b1) : f32[B, 256]
    %2 = relu(%1) : f32[B, 256]
  }
  group 1 {
    %3 = matmul(%2, %w2) : f32[B, 10]
    %4 = add(%3, %b2) : f32[B, 10]
  }
  %5 = softmax(%4) {axis = 1} : f32[B, 10]
  return %5
}
"""


def test_golden_epilogues_join_their_matmul_and_opaque_ops_stay_alone() -> None:
    assert after(MLP, "fuse") == MLP_FUSED


def test_groups_round_trip_through_text() -> None:
    assert str(parse_ir(MLP_FUSED)) == MLP_FUSED


def test_reductions_end_groups_and_injective_ops_do_not_join_epilogues() -> None:
    text = """graph @G(%x: f32[B, 4], %w: param f32[4, 4] = zeros()) -> (f32[B], f32[4, B]) {
      %0 = exp(%x) : f32[B, 4]
      %1 = reduce_sum(%0) {axes = [1]} : f32[B]
      %2 = neg(%1) : f32[B]
      %3 = matmul(%x, %w) : f32[B, 4]
      %4 = transpose(%3) {perm = [1, 0]} : f32[4, B]
      return %2, %4
    }"""
    assert after(text, "fuse").splitlines()[1:9] == [
        "  group 0 {",
        "    %0 = exp(%x) : f32[B, 4]",
        "    %1 = reduce_sum(%0) {axes = [1], keepdims = false} : f32[B]",
        "  }",
        "  %2 = neg(%1) : f32[B]",
        "  %3 = matmul(%x, %w) : f32[B, 4]",
        "  %4 = transpose(%3) {perm = [1, 0]} : f32[4, B]",
        "  return %2, %4"]


def test_no_cycle_through_an_op_outside_the_group() -> None:
    """add reads the matmul directly and through softmax: joining the matmul's group would make
    the group need softmax's result, and softmax the group's."""
    text = """graph @G(%x: f32[B, 4], %w: param f32[4, 4] = zeros()) -> (f32[B, 4]) {
      %0 = matmul(%x, %w) : f32[B, 4]
      %1 = softmax(%0) {axis = 1} : f32[B, 4]
      %2 = add(%0, %1) : f32[B, 4]
      return %2
    }"""
    assert "group" not in after(text, "fuse")


def test_nodes_move_so_each_group_is_one_run() -> None:
    text = """graph @G(%x: f32[B], %y: f32[B]) -> (f32[B], f32[B]) {
      %0 = exp(%x) : f32[B]
      %1 = neg(%y) : f32[B]
      %2 = log(%0) : f32[B]
      return %2, %1
    }"""
    assert after(text, "fuse").splitlines()[1:6] == [
        "  group 0 {", "    %0 = exp(%x) : f32[B]", "    %1 = log(%0) : f32[B]", "  }", "  %2 = neg(%y) : f32[B]"]


def test_max_group_size() -> None:
    chain = "\n".join(f"  %{i + 1} = neg(%{i}) : f32[B]" for i in range(6))
    text = f"graph @G(%x: f32[B]) -> (f32[B]) {{\n  %0 = exp(%x) : f32[B]\n{chain}\n  return %6\n}}"
    sizes = [line for line in after(text, "fuse", max_group_size=3).splitlines() if "group" in line]
    assert sizes == ["  group 0 {", "  group 1 {"]  # 7 nodes: 3 + 3, and one alone


def test_idempotent() -> None:
    assert idempotent(MLP, "fuse")


def test_a_group_in_two_runs_is_rejected() -> None:
    graph = parse_ir(MLP_FUSED)
    graph.nodes[5].group = 0
    with pytest.raises(ShipeiError, match="group 0 is not one run"):
        verify(graph)
    with pytest.raises(ShipeiError, match="group 0 appears twice") as err:
        parse_ir(MLP_FUSED.replace("group 1", "group 0"))
    assert (err.value.loc.line, err.value.loc.col) == (7, 9)


@given(graphs(max_nodes=10))
def test_preserves_meaning_and_follows_the_rules(graph) -> None:
    out = assert_preserves(graph, ["fuse"], max_group_size=4)
    members: dict[int, list] = {}
    for node in out.nodes:
        if node.group is not None:
            members.setdefault(node.group, []).append(node)
    for nodes in members.values():
        kinds = [get_op(n.op).fusion for n in nodes]
        assert 2 <= len(nodes) <= 4 and FusionKind.OPAQUE not in kinds
        assert kinds.count(FusionKind.OUT_FUSABLE) <= 1 and not any(n.op == "constant" for n in nodes)
        reduced = {r for n in nodes if get_op(n.op).fusion is FusionKind.REDUCTION for r in n.results}
        assert not any(v in reduced for n in nodes for v in n.operands), "a group goes on after its reduction"
    assert str(parse_ir(str(out))) == str(out)


TORCH_GROUPS = """\
# fused group 0: matmul, add, relu
def group0(x, w1, b1):
    v0 = x @ w1
    v1 = v0 + b1
    v2 = relu_keeping_nan(v1)
    return v2


# fused group 1: matmul, add
def group1(v2, w2, b2):
    v3 = v2 @ w2
    v4 = v3 + b2
    return v4
"""
TORCH_FORWARD = """\
    def forward(self, x):
        v2 = group0(x, self.w1, self.b1)
        v4 = group1(v2, self.w2, self.b2);  del v2
        v5 = softmax(v4, 1);  del v4
        return v5
"""


def test_each_group_is_one_function_in_the_generated_code() -> None:
    from shipei.codegen import emit

    source = emit(parse_ir(MLP_FUSED), "torch", "mlp.sp").source
    # at module level, so that forward does not define them anew on every call
    assert TORCH_GROUPS in source and TORCH_FORWARD in source


TORCH_COMPILED_GROUPS = """\
# fused group 0: matmul, add, relu
@torch.compile
def group0(x, w1, b1):
    v0 = x @ w1
    v1 = v0 + b1
    v2 = torch.relu(v1)
    return v2


# fused group 1: matmul, add
@torch.compile
def group1(v2, w2, b2):
    v3 = v2 @ w2
    v4 = v3 + b2
    return v4


class MLP(torch.nn.Module):
"""

def test_torch_compile_of_groups_hoists_each_group_to_module_level() -> None:
    from shipei.codegen import emit

    source = emit(parse_ir(MLP_FUSED), "torch", "mlp.sp", compile="groups").source
    assert TORCH_COMPILED_GROUPS in source and TORCH_FORWARD in source


def test_compiled_groups_that_compute_the_same_share_one_function() -> None:
    """Groups 0 and 1 differ only in names: one function. Group 2 is the same code on other
    types, so it gets its own (torch.compile would recompile for them anyway)."""
    from shipei.codegen import emit

    text = """graph @G(%x: f32[B, 4], %y: f32[B, 4], %z: f32[B, 2]) -> (f32[B, 4], f32[B, 4], f32[B, 2]) {
      group 0 {
        %0 = exp(%x) : f32[B, 4]
        %1 = relu(%0) : f32[B, 4]
      }
      group 1 {
        %2 = exp(%y) : f32[B, 4]
        %3 = relu(%2) : f32[B, 4]
      }
      group 2 {
        %4 = exp(%z) : f32[B, 2]
        %5 = relu(%4) : f32[B, 2]
      }
      return %1, %3, %5
    }"""
    source = emit(parse_ir(text), "torch", "g.sp", compile="groups").source
    assert source.count("@torch.compile\n") == 2
    assert "        v1 = group0(x)\n        v3 = group0(y)\n        v5 = group2(z)\n" in source


def test_a_group_returns_every_value_read_after_it_and_takes_shape_symbols() -> None:
    from shipei.codegen import emit

    text = """graph @G(%x: f32[B, 4]) -> (f32[B, 2, 2], f32[B, 4]) {
      group 0 {
        %0 = exp(%x) : f32[B, 4]
        %1 = reshape(%0) {shape = [B, 2, 2]} : f32[B, 2, 2]
      }
      %2 = softmax(%0) : f32[B, 4]
      return %1, %2
    }"""
    source = emit(parse_ir(text), "torch", "g.sp").source
    assert "\ndef group0(x, B):\n" in source and "        v0, v1 = group0(x, B)\n" in source
