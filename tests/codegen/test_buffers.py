"""Buffer reuse on eager targets: which results overwrite a dying operand or go into a buffer kept
between calls, and that doing so keeps every result, input and weight as it was."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from shipei.codegen import emit, get_target
from shipei.codegen.buffers import plan_buffers
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.init import init_params
from shipei.ir.parser import parse_ir
from shipei.ir.registry import get_op
from shipei.ir.types import DType, Sym, TensorType
from shipei.runtime import Executable
from shipei.runtime.executable import import_generated, import_module_file, write_generated

import shipei
from shipei.testing import graphs
from shipei.testing.lowering import check_outputs, lazy_declared, sample_inputs

TORCH = get_target("torch")
B = Sym.named("B")


def _graph(dtype: DType = DType.f32) -> tuple[Graph, Builder, object, object]:
    g = Graph("G")
    b = Builder(g)
    x = b.input("x", TensorType(dtype, (B, 4)))
    w = b.add_param("w", TensorType(dtype, (4, 4)), Init("ones"))
    return g, b, x, w


def _writes(g: Graph) -> list[tuple[str, int]]:
    return [(node.op, k) for node, k in plan_buffers(g, TORCH, g.last_reads()).writes.items()]


def test_a_dying_temporary_is_overwritten_and_inputs_weights_and_outputs_never_are() -> None:
    g, b, x, w = _graph()
    y = b("matmul", x, w)          # fresh, dies at relu
    r = b("relu", y)               # fresh, read twice later
    s = b("add", r, x)             # r is read again below: out of place
    t = b("mul", s, r)             # s dies here: in place; r dies too but is operand 1 of a mul...
    u = b("add", x, t)             # ...t dies at operand 1 of a commutative op: swapped
    g.outputs = [u, b("exp", u)]   # u is an output: exp is out of place
    assert _writes(g) == [("relu", 0), ("mul", 0), ("add", 1)]
    source = emit(g, "torch", reuse_buffers=True).source
    assert "v1 = relu_keeping_nan(v0, inplace=True)" in source  # its form for the oneDNN graph (torch.relu_ eagerly)
    assert "v3 = v2.mul_(v1)" in source and "v4 = v3.add_(x)" in source
    assert "v2 = v1 + x" in source and "v5 = exp_keeping_nan(v4)" in source
    assert ".add_(" not in emit(g, "torch").source  # only when asked


def test_a_value_whose_view_is_read_later_is_not_overwritten() -> None:
    g, b, x, w = _graph()
    y = b("exp", x)
    view = b("reshape", y, shape=(B, 2, 2))
    z = b("neg", y)                 # y dies here, but its view is read below
    g.outputs = [z, view]
    assert _writes(g) == []


def test_a_view_is_never_overwritten_even_when_its_base_is_dead() -> None:
    g, b, x, w = _graph()
    view = b("transpose", b("exp", b("matmul", x, w)), perm=(1, 0))
    g.outputs = [b("neg", view)]
    assert _writes(g) == [("exp", 0)]


# erf of a convolution of two weights: the same at every call
WEIGHTS_ONLY = """\
graph @G(%x: f32[B, 4], %w0: param f32[1, 2, 3, 3] = uniform(low=-1.0, high=1.0),
         %w1: param f32[4, 1, 1, 2] = uniform(low=-1.0, high=1.0)) -> (f32[B, 4], f32[1, 4, 2, 2]) {
  %0 = relu(%x) : f32[B, 4]
  %1 = exp(%0) : f32[B, 4]
  %2 = conv2d(%w0, %w1) {stride = [2], padding = [0, 1], dilation = [1], groups = 2} : f32[1, 4, 2, 2]
  %3 = erf(%2) : f32[1, 4, 2, 2]
  return %1, %3
}
"""

# runs the program three times, where torch's oneDNN graph runs it frozen
RUN_THREE_TIMES = f"""
from shipei.codegen import emit
from shipei.ir.init import init_params
from shipei.ir.parser import parse_ir
from shipei.runtime import Executable
from shipei.runtime.executable import write_generated
from shipei.testing.lowering import check_outputs, lazy_declared, sample_inputs
graph = parse_ir({WEIGHTS_ONLY!r})
weights = init_params(graph, 0)
inputs, ref = sample_inputs(graph, 0, weights)
exe = Executable(graph, "torch", write_generated(emit(graph, "torch", reuse_buffers=True)), weights, "cpu")
for _ in range(3):
    assert check_outputs(graph, exe.run(*inputs), ref, "torch", lazy_declared(graph, inputs, weights)) is None
"""


def test_a_value_computed_from_weights_alone_is_never_overwritten() -> None:
    graph = parse_ir(WEIGHTS_ONLY)
    assert _writes(graph) == [("exp", 0)]  # over relu's result, which depends on x; not erf over the convolution
    # freezing the traced program folds the convolution into a constant: writing erf into it crashed
    # the oneDNN graph at its second call (a subprocess, so that a crash fails this test alone)
    run = subprocess.run([sys.executable, "-c", RUN_THREE_TIMES], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_sub_keeps_its_order_integers_and_broadcast_operands_stay_out_of_place() -> None:
    g, b, x, w = _graph()
    row = b("reduce_sum", b("exp", x), axes=(0,), keepdims=True)   # f32[1, 4]
    g.outputs = [b("sub", x, b("exp", x)), b("add", row, b("neg", x))]
    assert _writes(g) == [("add", 1)]  # sub's dying operand is its second; row would broadcast
    gi = Graph("I")
    bi = Builder(gi)
    xi = bi.input("x", TensorType(DType.i32, (4,)))
    gi.outputs = [bi("neg", bi("abs", xi))]
    assert _writes(gi) == []


def test_an_operand_read_twice_by_the_node_is_not_overwritten() -> None:
    g, b, x, w = _graph()
    y = b("exp", x)
    g.outputs = [b("mul", y, y)]
    assert _writes(g) == []


def test_a_donated_input_is_overwritten_by_its_last_reader_and_only_when_donated() -> None:
    g = Graph("Step")
    b = Builder(g)
    p, m, grad = (b.input(name, TensorType(DType.f32, (4,))) for name in ("p", "m", "g"))
    m2 = b("add", m, grad)                 # m and grad die here
    g.outputs = [b("sub", p, m2), m2]      # p dies here; m2 is an output

    def writes(*donated: str) -> list[tuple[str, int]]:
        g.donated = frozenset(donated)
        plan = plan_buffers(g, TORCH, g.last_reads(), donated=[v for v in g.inputs if v.name in donated])
        return [(node.op, k) for node, k in plan.writes.items()]

    assert writes() == []                  # a caller's input is not the program's to overwrite
    assert writes("p", "m") == [("add", 0), ("sub", 0)]
    assert writes("g") == [("add", 1)]     # the commutative add writes over its donated operand


def _run(graph: Graph, inputs, weights, **options) -> list[np.ndarray]:
    exe = Executable(graph, "torch", write_generated(emit(graph, "torch", **options)), weights, "cpu")
    return [exe.run(*inputs), exe.run(*inputs)]


@given(graphs(max_nodes=10, targets=["torch"]))
def test_reusing_buffers_keeps_results_inputs_and_weights(graph: Graph) -> None:
    weights = init_params(graph, 0)
    inputs, ref = sample_inputs(graph, 0, weights)
    assume(ref.problem is None)
    kept = [np.array(a, copy=True) for a in inputs]
    first, second = _run(graph, inputs, weights, reuse_buffers=True)
    assert check_outputs(graph, first, ref, "torch", lazy_declared(graph, inputs, weights)) is None
    for a, b in zip(inputs, kept):  # the program reads numpy inputs without a copy
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    for a, b in zip(first, second):  # weights and constants are as loaded
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def _per_call(source: str, text: str) -> int:
    """How often a call of forward runs `text`: in forward itself, and in each function (a fused
    group's, a repeated layer's) as often as forward runs it, directly or through another."""
    functions = dict(re.findall(r"^def (group\d+|block)\(.*?\n((?:    .*\n|\n)+)", source, re.M))
    forward = source[source.index("    def forward("):]
    forward = forward[:forward.index("\n\n\n")]

    def runs(name: str) -> int:
        calls = {other: len(re.findall(rf"= {name}\(", body)) for other, body in functions.items()}
        return len(re.findall(rf"= {name}\(", forward)) + sum(n * runs(other) for other, n in calls.items() if n)

    return forward.count(text) + sum(body.count(text) * runs(name) for name, body in functions.items())


def test_o3_programs_reuse_and_keep_buffers_and_options_turn_each_off() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "transformer.sp"
    # else oneDNN's GEMM adds the residuals and applies gelu, and the oneDNN graph plans its own buffers
    unfused = {"fuse_post_ops": False, "onednn_graph": False}
    o3 = shipei.compile(example, "torch", opt=3, freeze=True, options=unfused).source
    # the residual adds, and the position embedding's onto the token embedding, now a kept buffer
    assert "torch.ops.aten.gelu_(" in o3 and _per_call(o3, ".add_(") == 5
    # the embeddings and every linear but the LM head's, whose result is the output
    assert _per_call(o3, "out=self._kept.get(") == 10 and "self.lm_head.weight, out=" not in o3
    assert "out=self._kept" not in shipei.compile(example, "torch", opt=3,
                                                  options={**unfused, "keep_buffers": False}).source
    assert ".add_(" not in shipei.compile(example, "torch", opt=3, options={**unfused, "reuse_buffers": False,
                                                                           "keep_buffers": False}).source
    for other in ({"opt": 2}, {"opt": 3}, {"opt": 3, "options": {"amp": "bf16"}},
                  {"opt": 3, "options": {"compile": "groups"}}):
        source = shipei.compile(example, "torch", **other).source
        assert "out=self._kept" not in source and "KeptBuffers()" not in source


def test_forward_leaves_the_tensors_it_is_given_as_they_were() -> None:
    """Tensors handed to forward() directly, not copied from numpy by run()."""
    source = """
    model M() {
        forward(x: f32[B, 8]) -> f32[B, 8] {
            y = exp(x)
            return relu(y * 2.0) + x
        }
    }
    """
    compiled = shipei.compile(source, "torch", opt=3)
    assert "torch.relu_(" in compiled.source
    with tempfile.TemporaryDirectory(prefix="shipei-inplace-") as tmp:
        module = import_module_file(compiled.save(tmp))
        model = module.load(compiled.weights)
    x = torch.randn(3, 8)
    before = x.clone()
    with torch.inference_mode():
        y = model(x)
    assert torch.equal(x, before) and torch.allclose(y, torch.relu(torch.exp(before) * 2) + before)


@pytest.mark.parametrize("op", sorted(TORCH.inplace))
def test_every_in_place_spelling_is_fresh_and_lowerable(op: str) -> None:
    assert op in TORCH.fresh and op in TORCH.rules


@pytest.mark.parametrize("dtype", [DType.f16, DType.bf16, DType.f32])
@pytest.mark.parametrize("op", sorted(TORCH.inplace))
def test_every_in_place_spelling_computes_bit_for_bit_what_its_rule_does(op: str, dtype: DType) -> None:
    """On a few elements, where torch's kernels take their unvectorized path: 16-bit rsqrt in
    place once skipped the rule's f32 computation and came out 1 ulp off (rsqrt(0.7085))."""
    g = Graph("G")
    b = Builder(g)
    x = b.input("x", TensorType(dtype, (5,)))
    fresh = b("abs", x)  # the program's own storage, dying at `op`
    g.outputs = [b(op, fresh, x) if len(get_op(op).operands) == 2 else b(op, fresh)]
    inputs = [np.array([0.70849609375, 1.1171875, 2.5, 0.1, 3.0], np.float32)]
    assert _writes(g) == [(op, 0)]
    in_place, out_of_place = (_run(g, inputs, {}, reuse_buffers=reuse)[0] for reuse in (True, False))
    assert np.array_equal(in_place, out_of_place)


def test_a_gather_by_a_scalar_index_is_a_view_and_not_overwritten() -> None:
    g = Graph("G")
    b = Builder(g)
    table = b.add_param("table", TensorType(DType.f32, (3, 4)), Init("ones"))
    i = b.input("i", TensorType(DType.i64, ()))
    g.outputs = [b("exp", b("gather", table, i, axis=0))]  # torch: table[i], a view of the weight
    assert _writes(g) == []
    weights = {"table": np.arange(12, dtype=np.float32).reshape(3, 4)}
    first, second = _run(g, [np.array(1)], weights, reuse_buffers=True)
    assert np.array_equal(first[0], second[0])


def _slots(g: Graph) -> list[tuple[str, int]]:
    return [(node.op, k) for node, k in plan_buffers(g, TORCH, g.last_reads(), keep=True).slots.items()]


def test_kept_buffers_go_to_results_of_one_type_whose_lifetimes_do_not_overlap() -> None:
    g, b, x, w = _graph()
    h1 = b("matmul", x, w)              # buffer 0
    h2 = b("matmul", b("relu", h1), w)  # relu writes over h1; h1's storage is read here: buffer 1
    h3 = b("matmul", h2, w)             # buffer 0 is free again
    wide = b("concat", h3, h3, axis=1)  # another type: buffer 2
    g.outputs = [b("reduce_sum", wide, axes=(1,), keepdims=False)]
    assert _slots(g) == [("matmul", 0), ("matmul", 1), ("matmul", 0), ("concat", 2)]


def test_what_an_output_may_be_or_view_is_never_kept() -> None:
    g, b, x, w = _graph()
    viewed = b("matmul", x, w)
    overwritten = b("matmul", x, w)
    kept = b("matmul", x, w)
    g.outputs = [b("reshape", viewed, shape=(B, 2, 2)),     # a view of `viewed`
                 b("add", b("exp", overwritten), x),         # in place twice: the output is its storage
                 b("softmax", kept, axis=1)]                 # never in place: a new tensor
    assert _slots(g) == [("matmul", 0)]
    assert plan_buffers(g, TORCH, g.last_reads(), keep=True).slots.keys() == {kept.producer}


def test_a_kept_buffer_is_held_while_a_view_of_it_is_read() -> None:
    g, b, x, w = _graph()
    y = b("matmul", x, w)
    view = b("reshape", y, shape=(B, 4, 1))
    z = b("matmul", x, w)  # y's buffer is still viewed: another one
    g.outputs = [b("concat", b("reduce_sum", view, axes=(2,), keepdims=False), z, axis=1)]
    assert _slots(g) == [("matmul", 0), ("matmul", 1)]


def test_without_in_place_writes_the_result_an_operand_would_have_taken_is_kept() -> None:
    g, b, x, w = _graph()
    g.outputs = [b("softmax", b("exp", b("matmul", x, w)), axis=1)]
    assert _slots(g) == [("matmul", 0)]  # exp overwrites the matmul's buffer
    plan = plan_buffers(g, TORCH, g.last_reads(), reuse=False, keep=True)
    assert plan.writes == {} and [(n.op, k) for n, k in plan.slots.items()] == [("matmul", 0), ("exp", 1)]
    x_in = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    first, second = _run(g, [x_in], {"w": np.ones((4, 4), np.float32)}, keep_buffers=True)
    want = np.exp(x_in @ np.ones((4, 4)))
    assert np.allclose(first[0], want / want.sum(1, keepdims=True)) and np.array_equal(first[0], second[0])


def test_integer_and_16_bit_results_are_not_kept() -> None:
    for dtype in (DType.i32, DType.f16, DType.bf16):
        g, b, x, w = _graph(dtype)
        g.outputs = [b("reduce_sum", b("matmul", x, w), axes=(1,), keepdims=False)]
        assert _slots(g) == []


KEPT_GOLDEN = '''\
    def forward(self, x):
        B = x.shape[0]
        v0 = torch.matmul(x, self.w, out=self._kept.get(0, (B, 4), x))
        v1 = torch.relu_(v0);  del v0
        v2 = torch.matmul(v1, self.w, out=self._kept.get(1, (B, 4), v1));  del v1
        v3 = torch.matmul(v2, self.w, out=self._kept.get(0, (B, 4), v2));  del v2
        v4 = softmax(v3, 1);  del v3
        return v4
'''


def test_a_program_with_kept_buffers_reads_as_written() -> None:
    g, b, x, w = _graph()
    g.outputs = [b("softmax", b("matmul", b("matmul", b("relu", b("matmul", x, w)), w), w), axis=1)]
    source = emit(g, "torch", reuse_buffers=True, keep_buffers=True, onednn_graph=False).source
    assert KEPT_GOLDEN in source
    assert "self._kept = KeptBuffers()" in source and "self.requires_grad_(False)" in source


def _load(graph: Graph, weights, **options):
    module = import_generated(emit(graph, "torch", onednn_graph=False, **options))
    return module, module.load(weights)


@given(graphs(max_nodes=10, targets=["torch"]))
def test_kept_buffers_never_change_a_result_the_caller_holds(graph: Graph) -> None:
    """A second call on other inputs computes its own results and leaves the first call's as they
    were: no output is, or views, a kept buffer."""
    weights = init_params(graph, 0)
    (inputs, ref), (other, other_ref) = (sample_inputs(graph, seed, weights) for seed in (0, 1))
    assume(ref.problem is None and other_ref.problem is None)
    module, model = _load(graph, weights, reuse_buffers=True, keep_buffers=True)
    first = module.run(model, inputs)
    held = [np.array(a, copy=True) for a in first]
    second = module.run(model, other)
    for a, b in zip(first, held):
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    declared = lazy_declared(graph, inputs, weights)
    assert check_outputs(graph, first, ref, "torch", declared) is None
    assert check_outputs(graph, second, other_ref, "torch", lazy_declared(graph, other, weights)) is None


def _mlp() -> Graph:
    """The example MLP with a head of 32 classes, wide enough for F.linear to write it into a kept
    buffer (ten are `narrow_head`'s, whose result is new)."""
    return shipei.parse(Path(__file__).resolve().parents[2] / "examples" / "mlp.sp", classes=32)


def test_threads_calling_one_model_each_write_their_own_buffers() -> None:
    """Torch releases the GIL inside its kernels: with one set of buffers for both threads, one
    thread's linear would write over the other's between its two layers."""
    graph = _mlp()
    compiled = shipei.compile(graph, "torch", opt=3, freeze=True, options={"onednn_graph": False})
    assert "out=self._kept.get(" in compiled.source
    with tempfile.TemporaryDirectory(prefix="shipei-kept-") as tmp:
        module = import_module_file(compiled.save(tmp))
        model = module.load(compiled.weights)
    inputs = [torch.randn(256, 784, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.inference_mode():
        want = [model(x) for x in inputs]
    wrong: list[int] = []

    def call(i: int) -> None:
        with torch.inference_mode():
            wrong.extend(i for _ in range(200) if not torch.equal(model(inputs[i]), want[i]))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def _loaded_mlp():
    compiled = shipei.compile(_mlp(), "torch", opt=3, freeze=True, options={"onednn_graph": False})
    with tempfile.TemporaryDirectory(prefix="shipei-kept-") as tmp:
        module = import_module_file(compiled.save(tmp))
        return module.load(compiled.weights), compiled


def test_a_model_with_kept_buffers_runs_in_every_grad_mode_at_every_batch_size() -> None:
    """Buffers made under inference mode are inference tensors, which torch lets no other mode
    write; and a larger batch needs larger buffers, a smaller one a part of them."""
    model, compiled = _loaded_mlp()
    fresh, _ = _run_fresh(compiled)
    for b, mode in [(4, torch.inference_mode), (4, torch.no_grad), (64, torch.enable_grad),
                    (8, torch.inference_mode), (64, torch.no_grad), (4, torch.enable_grad)]:
        x = torch.randn(b, 784)
        with mode():  # the same mode for both: where autograd records, large linears are not packed
            y = model(x)  # with grad enabled too: the parameters do not require grad, so out= is allowed
            assert torch.equal(y, fresh(x))


def _run_fresh(compiled):
    """The same model without kept buffers."""
    source = shipei.compile(compiled.ir, "torch", options={"keep_buffers": False, "onednn_graph": False}).source
    assert "_kept" not in source
    with tempfile.TemporaryDirectory(prefix="shipei-kept-") as tmp:
        path = Path(tmp) / "fresh_torch.py"
        path.write_text(source)
        module = import_module_file(path)
    return module.load(compiled.weights), module


def test_a_copy_of_a_model_keeps_buffers_of_its_own() -> None:
    model, _ = _loaded_mlp()
    x = torch.randn(4, 784)
    y = model(x)
    twin = copy.deepcopy(model)
    assert twin._kept is not model._kept and torch.equal(twin(x), y)


def test_a_model_with_kept_buffers_follows_its_weights_to_another_dtype_or_device() -> None:
    """A buffer takes the dtype and device of an operand at run time, not those written in the
    program: `model.double()` and a model without inputs moved off the CPU keep working."""
    model, compiled = _loaded_mlp()
    fresh, _ = _run_fresh(compiled)
    x = torch.randn(4, 784, dtype=torch.float64)
    with torch.inference_mode():
        assert torch.equal(model.double()(x), fresh.double()(x))
    source = """
    model M() {
        fc = Linear(16, 16)
        forward() -> f32[16, 16] { return softmax(fc(fc.weight), axis=1) * 2.0 }
    }
    """
    no_inputs = shipei.compile(source, "torch", opt=3, options={"onednn_graph": False})
    assert "out=self._kept.get(" in no_inputs.source
    with tempfile.TemporaryDirectory(prefix="shipei-kept-") as tmp:
        meta = import_module_file(no_inputs.save(tmp)).load(no_inputs.weights).to("meta")
    assert meta().device.type == "meta"


@pytest.mark.parametrize("name", ["KeptBuffers", "threading", "run", "torch", "weights", "super"])
def test_a_model_named_like_a_name_of_its_module_gets_a_class_name_of_its_own(name: str) -> None:
    source = f"model {name}() {{ forward(x: f32[2]) -> f32[2] {{ return exp(x) }} }}"
    compiled = shipei.compile(source, "torch", opt=3)
    assert f"class {name}_1(torch.nn.Module):" in compiled.source
    x = np.arange(2, dtype=np.float32)
    assert np.allclose(compiled.load(device="cpu").run(x)[0], np.exp(x))
