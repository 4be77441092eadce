"""The torch target: accelerator options, the module contract and a golden program.

Every op x dtype against the reference is in test_ops_all_targets.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from shipei.codegen import emit
from shipei.codegen.prepare import prepare
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.inputs import random_inputs
from shipei.ir.tolerance import MIXED_PRECISION, compare
from shipei.ir.types import DType, Sym, TensorType

import shipei

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(example: str, **options) -> tuple[np.ndarray, np.ndarray, object]:
    compiled = shipei.compile(EXAMPLES / example, "torch", options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 2, "T": 8})
    return exe.run(*x)[0], shipei.reference(compiled.ir, x, compiled.weights)[0], exe


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("example", ["mlp.sp", "cnn.sp", "transformer.sp"])
def test_autocast_stays_within_mixed_precision_and_keeps_declared_dtype(example: str, amp: str) -> None:
    got, expected, _ = _run(example, amp=amp)
    assert got.dtype == np.float32
    assert compare(got, expected, DType.f32, MIXED_PRECISION).ok
    assert not compare(got, expected, DType.f32).ok or amp == "fp16", "autocast should change the numbers"


def test_tf32_and_channels_last_keep_float32_results_on_cpu() -> None:
    got, expected, exe = _run("cnn.sp", tf32=True, channels_last=True)
    assert compare(got, expected, DType.f32).ok
    weight = exe._model.stem.folded_weight  # the stem's weight with its batch norm folded in at load
    assert weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("example", "option", "expected"), [
    ("cnn.sp", None, True), ("mlp.sp", None, False), ("cnn.sp", False, False)])
def test_channels_last_is_the_default_where_the_graph_convolves_or_pools(example: str, option, expected: bool) -> None:
    compiled = shipei.compile(EXAMPLES / example, "torch", options={} if option is None else {"channels_last": option})
    assert f"CHANNELS_LAST = {expected}" in compiled.source
    if example == "cnn.sp":
        got, want, exe = _run(example, **({} if option is None else {"channels_last": option}))
        assert compare(got, want, DType.f32).ok
        assert exe._model.stem.folded_weight.is_contiguous(memory_format=torch.channels_last) == expected


#: The eager program's kernels, which these tests are of, rather than the oneDNN graph `call` runs.
EAGER = {"onednn_graph": False}

_FAULTS = """
import resource, sys
import numpy as np
import torch
import shipei
torch.set_num_threads(1)  # one heap: torch's worker threads would allocate from arenas of their own
# fused, or as a oneDNN graph, no result is unmapped
options = {"cpu_arena": sys.argv[2] == "on", "fuse_post_ops": False, "onednn_graph": False}
exe = shipei.compile(sys.argv[1], "torch", options=options).load(device="cpu")
x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
for _ in range(5):
    exe.run(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    exe.run(x)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def test_the_cpu_arena_keeps_a_calls_memory_for_the_next() -> None:
    """Counted in page faults, not time: with the arena a warm call of the example ResNet (B=16, op
    by op) faults few pages in; without it, its activations are unmapped after each call and fault
    in again (here 0-26 a call with it, counts the machine's load moves, against 150-480 without).
    In fresh processes, since the setting is the process's."""
    def faults_per_call(arena: str) -> float:
        out = subprocess.run([sys.executable, "-c", _FAULTS, str(EXAMPLES / "cnn.sp"), arena], capture_output=True,
                             text=True, check=True, timeout=300)
        return float(out.stdout.split()[-1])

    on, off = faults_per_call("on"), faults_per_call("off")
    assert off > 100 and on < off / 4, (on, off)


def _mlp(batch: int, **options) -> tuple[shipei.Compiled, object, list[np.ndarray]]:
    compiled = shipei.compile(EXAMPLES / "mlp.sp", "torch", options=options)
    return compiled, compiled.load(device="cpu"), random_inputs(compiled.ir, seed=0, dims={"B": batch})


def _packed(exe) -> set[str]:
    """The params `packed_linear` holds packed copies of."""
    copies = getattr(exe.module, "_PACKED_WEIGHTS", {})
    return {name for name, p in exe._model.named_parameters() if id(p) in copies and copies[id(p)][0]() is p}


def test_large_linears_run_on_packed_weights_and_follow_weights_written_in_place() -> None:
    """B=64: the 784x256 layer's product (12.8M multiply-adds) is packed, the 256x10 one is not. A
    weight overwritten in place (what `assign` does) is packed again: the results are the new
    weights', not the stale copy's."""
    compiled, exe, x = _mlp(64)
    assert compare(exe.run(*x)[0], shipei.reference(compiled.ir, x, compiled.weights)[0], DType.f32).ok
    assert _packed(exe) == {"fc1.weight"}
    before = exe.run(*x)[0]
    new = {k: (v * 0.5 + 0.1).astype(v.dtype) for k, v in compiled.weights.items()}
    exe.module.assign(exe._model, {k: torch.from_numpy(v) for k, v in new.items()})
    got = exe.run(*x)[0]
    assert compare(got, shipei.reference(compiled.ir, x, new)[0], DType.f32).ok
    assert not np.allclose(got, before)


def test_small_products_and_gradients_keep_f_linear() -> None:
    """B=2 is below the threshold; autograd goes through F.linear (the packed kernel has no
    derivative) and gets the gradients the unpacked program gets."""
    compiled, exe, x = _mlp(2)
    exe.run(*x)
    assert _packed(exe) == set()
    _, unpacked, _ = _mlp(64, pack_linear=False)
    x64 = torch.from_numpy(random_inputs(compiled.ir, seed=1, dims={"B": 64})[0])
    grads = []
    for model in (exe._model, unpacked._model):
        params = list(model.parameters())
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            (model(x64)[:, 0]).sum().backward()
        grads.append([p.grad for p in params])
    for packed, plain in zip(*grads, strict=True):
        torch.testing.assert_close(packed, plain)
    assert _packed(exe) == set()


#: Each activation oneDNN applies as a post-op, as the DSL writes it around an expression.
POST_OPS = {"relu": "relu({})", "gelu": "gelu({})", "gelu_tanh": 'gelu({}, approximate="tanh")',
            "sigmoid": "sigmoid({})", "tanh": "tanh({})", "silu": "silu({})"}


def _post_op_model(post_op: str) -> str:
    """A convolution with a residual add and `post_op`, one with `post_op` alone (no bias), and two
    linears large enough to pack at B=128 (256x256: 8.4M multiply-adds), with `post_op` or an add."""
    act = POST_OPS[post_op]
    return f"""
    model M() {{
        conv1 = Conv2d(8, 8, 3, padding=1)
        conv2 = Conv2d(8, 8, 3, padding=1, bias=false)
        fc1 = Linear(256, 256)
        fc2 = Linear(256, 256)
        forward(x: f32[B, 8, 12, 12], h: f32[B, 256])
                -> (f32[B, 8, 12, 12], f32[B, 8, 12, 12], f32[B, 256], f32[B, 256]) {{
            return {act.format("conv1(x) + x")}, {act.format("conv2(x)")}, {act.format("fc1(h)")}, fc2(h) + h
        }}
    }}
    """


def _outputs_match(compiled: shipei.Compiled, got, x: list[np.ndarray], weights) -> bool:
    want = shipei.reference(compiled.ir, x, weights)
    return all(compare(np.asarray(g), w, DType.f32).ok for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("opt", [2, 3])
@pytest.mark.parametrize("post_op", sorted(POST_OPS))
def test_a_convolution_or_linear_and_its_post_ops_run_as_one_onednn_call(post_op: str, opt: int) -> None:
    """At the default level as in -O3's fused groups. In inference the fused kernels compute on
    packed weights, which follow weights written in place; where autograd records, the same calls
    go op by op. Both match the reference."""
    compiled = shipei.compile(_post_op_model(post_op), "torch", opt=opt, options=EAGER)
    assert bool(re.search(r"fused group \d+:", compiled.source)) == (opt == 3)
    calls = [(call, weight.removeprefix("self.").replace(".", "_"), other, post_op) for call, weight, other, post_op
             in re.findall(r"= (fused_\w+)\(\w+, ([\w.]+), .*, (\w+), ('\w+'|None)\)", compiled.source)]
    after_add = repr(post_op) if post_op == "relu" else "None"  # torch's binary fusion takes relu alone
    assert sorted(calls) == sorted([("fused_conv2d", "conv1_weight", "x", after_add),
                                    ("fused_conv2d", "conv2_weight", "None", repr(post_op)),
                                    ("fused_linear", "fc1_weight", "None", repr(post_op)),
                                    ("fused_linear", "fc2_weight", "h", "None")])
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 128})
    assert _outputs_match(compiled, exe.run(*x), x, compiled.weights)
    packed = exe.module._PACKED_WEIGHTS
    assert {name for name, p in exe._model.named_parameters() if id(p) in packed} == {
        "conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}
    new = {k: (v * 0.5 + 0.1).astype(v.dtype) for k, v in compiled.weights.items()}
    exe.module.assign(exe._model, {k: torch.from_numpy(v) for k, v in new.items()})
    assert _outputs_match(compiled, exe.run(*x), x, new)
    with torch.enable_grad():
        eager = exe._model(*(torch.from_numpy(a) for a in x))
    assert _outputs_match(compiled, [t.detach().numpy() for t in eager], x, new)


@pytest.mark.parametrize("post_op", sorted(POST_OPS))
def test_post_ops_go_op_by_op_in_place_for_nchw_input_and_small_products(post_op: str) -> None:
    """In inference the fused calls' fallback overwrites the fresh result, as the memory plan
    counts on; the results stay the reference's."""
    compiled = shipei.compile(_post_op_model(post_op), "torch", opt=3, options={**EAGER, "channels_last": False})
    assert "fused_conv2d(" in compiled.source and "fused_linear(" in compiled.source
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=1, dims={"B": 3})
    assert _outputs_match(compiled, exe.run(*x), x, compiled.weights)
    assert not any(id(p) in exe.module._PACKED_WEIGHTS for p in exe._model.parameters())


@pytest.mark.parametrize(("conv", "out"), [
    ("Conv2d(8, 8, 3, padding=1, groups=8)", "f32[B, 8, 12, 12]"),
    ("Conv2d(8, 16, 3, stride=2, padding=1, groups=2)", "f32[B, 16, 6, 6]"),
    ("Conv2d(8, 8, 3, padding=2, dilation=2)", "f32[B, 8, 12, 12]"),
    ("Conv2d(8, 8, 1)", "f32[B, 8, 12, 12]")])
def test_fused_convolutions_pack_grouped_strided_dilated_and_pointwise_windows(conv: str, out: str) -> None:
    """The packed weight is laid out for each convolution's groups, stride and dilation."""
    compiled = shipei.compile(f"""
    model M() {{
        conv = {conv}
        forward(x: f32[B, 8, 12, 12]) -> {out} {{
            return relu(conv(x))
        }}
    }}
    """, "torch", opt=3)
    assert "= fused_conv2d(" in compiled.source
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 4})
    assert _outputs_match(compiled, exe.run(*x), x, compiled.weights)
    assert id(exe._model.conv.weight) in exe.module._PACKED_WEIGHTS


@pytest.mark.parametrize("opt", [2, 3])
def test_a_result_read_twice_is_not_fused_into_one_call(opt: int) -> None:
    """fc(h) feeds the gelu and the add: the GEMM cannot write both."""
    source = """
    model M() {
        fc = Linear(256, 256)
        forward(h: f32[B, 256]) -> (f32[B, 256], f32[B, 256]) {
            y = fc(h)
            return gelu(y), y + h
        }
    }
    """
    compiled = shipei.compile(source, "torch", opt=opt)
    assert "fused_" not in compiled.source and bool(re.search(r"fused group \d+:", compiled.source)) == (opt == 3)
    x = random_inputs(compiled.ir, seed=0, dims={"B": 128})
    assert _outputs_match(compiled, compiled.load(device="cpu").run(*x), x, compiled.weights)


@pytest.mark.parametrize("options", [{"fuse_post_ops": False}, {"amp": "bf16"}, {"compile": "groups"}])
def test_post_ops_stay_op_by_op_when_off_under_autocast_and_under_compile(options: dict) -> None:
    assert "fused_" not in shipei.compile(_post_op_model("relu"), "torch", opt=3, options=options).source
    assert "fused_conv2d(" in shipei.compile(_post_op_model("relu"), "torch", opt=3).source


@pytest.mark.parametrize("options", [{"amp": "bf16"}, {"compile": True}, {"pack_linear": False}])
def test_autocast_and_torch_compile_keep_f_linear(options: dict) -> None:
    """Autocast does not see the packed kernel, and Inductor packs weights itself."""
    source = shipei.compile(EXAMPLES / "mlp.sp", "torch", options=options).source
    assert "packed_linear" not in source and "fused_linear" not in source
    source = shipei.compile(EXAMPLES / "mlp.sp", "torch", options={"fuse_post_ops": False}).source
    assert "packed_linear(x, self.fc1.weight" in source
    assert "fused_linear(x, self.fc1.weight" in shipei.compile(EXAMPLES / "mlp.sp", "torch").source


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("window", ["2, stride=2", "3, stride=2, padding=1", "3, stride=1", "2, stride=1, padding=1"])
def test_max_pool_by_strided_maxima_matches_the_reference_nan_included(window: str, channels_last: bool) -> None:
    """On CPU in inference the program's max_pool2d takes the window's maxima over strided views
    (F.max_pool2d where autograd records); both against the reference, NaN in some windows."""
    source = f"model P() {{ forward(x: f32[B, 3, 9, 10]) -> f32[B, 3, H, W] {{ return max_pool2d(x, {window}) }} }}"
    compiled = shipei.compile(source, "torch", options={"channels_last": channels_last})
    exe = compiled.load(device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 10)).astype(np.float32)
    x[0, 0, 4, 5] = x[1, 2, 0, 0] = np.nan
    want = shipei.reference(compiled.ir, [x], compiled.weights)[0]
    assert np.isnan(want).any()
    assert compare(exe.run(x)[0], want, DType.f32).ok
    with torch.enable_grad():
        tensor = torch.from_numpy(x).requires_grad_(True)
        assert compare(exe._model(tensor).detach().numpy(), want, DType.f32).ok


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_a_1x1_max_pool_leaves_the_input_as_it_was_under_in_place_ops(dtype: str) -> None:
    """Found by the fuzzer at -O3: 1x1 windows leave the strided maxima views of the input, and
    -O3's tanh, computed in place over the pool's result, wrote into the caller's array (f32,
    eagerly) or into the tensor the oneDNN graph was traced on (bf16: the first result wrong)."""
    compiled = shipei.compile(f"""
    model P() {{
        param w: f32[3, 3] = uniform(low=-1.0, high=1.0)
        forward(x: {dtype}[B, 2, 3, 4], c: f32[4, 3]) -> (f32[4, 3], {dtype}[B, 2, 3, 4]) {{
            return c @ w, tanh(max_pool2d(x, [1, 1], [1], padding=[0, 0]))
        }}
    }}
    """, "torch", opt=3, freeze=True)
    assert ".tanh_()" in compiled.source
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 2})
    kept = [np.array(a, copy=True) for a in x]
    want = shipei.reference(compiled.ir, x, compiled.weights)
    for _ in range(2):
        got = exe.run(*x)
        assert all(np.array_equal(a, b) for a, b in zip(x, kept))
        assert all(compare(np.asarray(g, np.float64), w, compiled.ir.outputs[k].dtype).ok
                   for k, (g, w) in enumerate(zip(got, want, strict=True)))


def test_a_program_that_convolves_loads_a_weight_of_five_dimensions() -> None:
    """Found by the fuzzer at -O3 --freeze: a reshaped weight, folded into a 5-D constant, made
    the channels-last program's load fail (Module.to converts 4-D and 5-D tensors alike)."""
    compiled = shipei.compile("""
    model R() {
        param w: f32[4, 4, 2] = uniform(low=-1.0, high=1.0)
        param k: f32[2, 4, 3, 3] = uniform(low=-1.0, high=1.0)
        forward(x: f32[B, 4, 6, 6]) -> (f32[B, 2, 4, 4], f32[1, 2, 2, 4, 2]) {
            return conv2d(x, k), reshape(w, [1, 2, 2, 4, 2])
        }
    }
    """, "torch", opt=3, freeze=True)
    assert "CHANNELS_LAST = True" in compiled.source
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 2})
    want = shipei.reference(compiled.ir, x, compiled.weights)
    assert all(compare(g, w, DType.f32).ok for g, w in zip(exe.run(*x), want, strict=True))


#: Rows narrower than a float32 vector register, each way the program meets them: softmax and
#: log_softmax over a linear's rows (`narrow_head`, with and without a bias, 2-D and 3-D), a linear
#: alone (`narrow_linear`) and a softmax alone (`softmax`).
NARROW = """
model M() {
    head = Linear(256, 10)
    tail = Linear(256, 15, bias=false)
    plain = Linear(256, 12)
    forward(h: f32[B, 256], s: f32[B, T, 256], r: f32[B, T, 7])
            -> (f32[B, 10], f32[B, T, 15], f32[B, T, 12], f32[B, T, 7]) {
        return softmax(head(h), axis=-1), log_softmax(tail(s), axis=-1), plain(s) * 2.0, softmax(r, axis=-1) * 2.0
    }
}
"""

#: The same into buffers the model keeps (`out=`): a narrow linear and log_softmax whose results
#: the next op reads.
NARROW_KEPT = """
model K() {
    plain = Linear(256, 12)
    forward(s: f32[B, T, 256], r: f32[B, T, 7], m: f32[7, 7]) -> (f32[B, T, 12], f32[B, T, 7]) {
        return softmax(plain(s), axis=1), matmul(log_softmax(r, axis=-1), m)
    }
}
"""


class _RefusedLinear:
    """torch.nn.functional with F.linear refused: the narrow kernels' fast paths do not call it."""

    def __getattr__(self, name: str):
        if name == "linear":
            raise AssertionError("F.linear called where the narrow kernel should run")
        return getattr(torch.nn.functional, name)


@pytest.mark.parametrize("opt", [2, 3])
def test_narrow_rows_run_transposed_and_match_the_reference(opt: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """B=32, T=8 takes each fast path (320 to 2560 result elements, 786k multiply-adds for the lone
    linear), without F.linear; B=1, T=2 and autograd take torch's own kernels. All match the
    reference."""
    compiled = shipei.compile(NARROW, "torch", opt=opt, options=EAGER)
    for call in ("narrow_head(h, self.head.weight, self.head.bias, torch.softmax)",
                 "narrow_head(s, self.tail.weight, None, torch.log_softmax)", "softmax(r, 2)"):
        assert f"= {call}" in compiled.source
    assert re.search(r"= narrow_linear\(s, (self\.)?plain[._]weight, (self\.)?plain[._]bias\)", compiled.source)
    exe = compiled.load(device="cpu")
    small = random_inputs(compiled.ir, seed=1, dims={"B": 1, "T": 2})
    assert _outputs_match(compiled, exe.run(*small), small, compiled.weights)
    x = random_inputs(compiled.ir, seed=0, dims={"B": 32, "T": 8})
    with torch.enable_grad():
        eager = exe._model(*(torch.from_numpy(a) for a in x))
    assert _outputs_match(compiled, [t.detach().numpy() for t in eager], x, compiled.weights)
    monkeypatch.setattr(exe.module, "F", _RefusedLinear())
    got = exe.run(*x)
    assert _outputs_match(compiled, got, x, compiled.weights)
    assert all(a.flags.c_contiguous for a in got)  # copied back into place, not transposed views
    with pytest.raises(AssertionError, match="F.linear called"):
        exe.run(*small)


def test_narrow_rows_write_into_kept_buffers() -> None:
    compiled = shipei.compile(NARROW_KEPT, "torch", options={"keep_buffers": True, "reuse_buffers": True,
                                                               "onednn_graph": False})
    assert "= narrow_linear(s, self.plain.weight, self.plain.bias, out=self._kept.get(" in compiled.source
    assert "= log_softmax(r, 2, out=self._kept.get(" in compiled.source
    exe = compiled.load(device="cpu")
    for seed, dims in enumerate(({"B": 32, "T": 8}, {"B": 1, "T": 2}, {"B": 32, "T": 8})):
        x = random_inputs(compiled.ir, seed=seed, dims=dims)
        assert _outputs_match(compiled, exe.run(*x), x, compiled.weights)


def test_a_narrow_linear_read_twice_is_not_fused_with_its_softmax() -> None:
    source = """
    model M() {
        fc = Linear(256, 10)
        forward(h: f32[B, 256]) -> (f32[B, 10], f32[B, 10]) {
            y = fc(h)
            return softmax(y, axis=-1), y
        }
    }
    """
    compiled = shipei.compile(source, "torch")
    assert "narrow_head" not in compiled.source and "= softmax(y, 1)" in compiled.source
    x = random_inputs(compiled.ir, seed=0, dims={"B": 128})
    assert _outputs_match(compiled, compiled.load(device="cpu").run(*x), x, compiled.weights)


def test_compile_option_wraps_the_model_in_torch_compile() -> None:
    """Only the wrapping: compiling itself costs ~17 s cold and stays out of the default suite."""
    compiled = shipei.compile(EXAMPLES / "mlp.sp", "torch", options={"compile": True})
    assert "COMPILE = True" in compiled.source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exe = compiled.load(device="cpu")
    assert type(exe._model).__name__ == "OptimizedModule"


@pytest.mark.parametrize("example, n_functions", [("mlp.sp", 1), ("cnn.sp", 3), ("transformer.sp", 6)])
def test_compile_groups_puts_each_fused_group_under_torch_compile(example: str, n_functions: int) -> None:
    """Regional compilation: each fused group calls a module-level function under @torch.compile,
    one per distinct group (the transformer's second layer calls the first's: 11 groups, 6
    functions). Inductor's cold compile (~10 s a model here) stays out of the suite: torch's own
    switch (`torch._dynamo.config.disable`, what TORCH_COMPILE_DISABLE=1 sets) runs the same
    functions eagerly, which checks how they are hoisted, the transformer's `device` included."""
    compiled = shipei.compile(EXAMPLES / example, "torch", opt=3, options={"compile": "groups"})
    per_call = prepare(compiled.ir).nodes  # less what the program computes from its weights at load
    n_groups = len({n.group for n in per_call if n.group is not None})
    forward = compiled.source[compiled.source.index("    def forward("):]
    layers = dict(re.findall(r"^def (\w+)\(layer, .*?\n((?:    .*\n|\n)+)", compiled.source, re.M))  # repeated layers
    calls = len(re.findall(r" = group\d+\(", forward)) + sum(
        len(re.findall(r" = group\d+\(", body)) * len(re.findall(rf" = {name}\(", forward))
        for name, body in layers.items())
    assert calls == n_groups
    assert compiled.source.count("\n@torch.compile\ndef group") == n_functions
    assert "COMPILE = 'groups'" in compiled.source
    x = random_inputs(compiled.ir, seed=0, dims={"B": 2, "T": 8})
    with torch._dynamo.config.patch(disable=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exe = compiled.load(device="cpu")
        got = exe.run(*x)[0]
    assert compare(got, shipei.reference(compiled.ir, x, compiled.weights)[0], DType.f32).ok
    module = sys.modules[type(exe._model).__module__]
    functions = [f for name, f in vars(module).items() if name.startswith("group")]
    assert len(functions) == n_functions and all(hasattr(f, "_torchdynamo_orig_callable") for f in functions)


def test_a_hoisted_group_takes_the_module_when_it_reads_through_self() -> None:
    """Training-mode dropout reads `self.training`; at module level the group needs `self`."""
    source = """
model M() {
    fc = Linear(4, 3)
    forward(x: f32[B, 4]) -> f32[B, 3] {
        return relu(dropout(fc(x), p=0.5))
    }
}
"""
    compiled = shipei.compile(source, "torch", opt=3, pass_options={"training": True}, options={"compile": "groups"})
    assert "def group0(x, fc_weight, fc_bias, self):\n" in compiled.source
    x = random_inputs(compiled.ir, seed=0, dims={"B": 2})
    with torch._dynamo.config.patch(disable=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = compiled.load(device="cpu").run(*x)[0]  # eval mode: dropout passes values through
    assert compare(got, shipei.reference(compiled.ir, x, compiled.weights)[0], DType.f32).ok


def test_compile_groups_without_groups_is_a_clear_error() -> None:
    with pytest.raises(shipei.ShipeiError, match="compile='groups' compiles the fused groups, and this graph has none"):
        shipei.compile(EXAMPLES / "mlp.sp", "torch", opt=2, options={"compile": "groups"})


def test_unknown_option_value_is_a_clear_error() -> None:
    with pytest.raises(shipei.ShipeiError, match="amp must be None or one of bf16, fp16"):
        shipei.compile(EXAMPLES / "mlp.sp", "torch", options={"amp": "fp8"})
    for value in ("model", 1):
        with pytest.raises(shipei.ShipeiError, match=f"compile must be False, True or 'groups', got {value!r}"):
            shipei.compile(EXAMPLES / "mlp.sp", "torch", options={"compile": value})


def test_an_input_named_like_a_module_global_does_not_shadow_it() -> None:
    source = "model M() {\n    forward(AMP_DTYPE: f32[2, 3]) -> f32[2, 3] {\n        return relu(AMP_DTYPE)\n    }\n}\n"
    compiled = shipei.compile(source, "torch", options={"amp": "bf16"})
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    got = compiled.load(device="cpu").run(x)[0]
    assert compare(got, shipei.reference(compiled.ir, [x])[0], DType.f32, MIXED_PRECISION).ok


@pytest.mark.parametrize("name", ["training", "_parameters", "__class__", "train", "_kept", "append"])
def test_a_name_torch_modules_define_is_a_compile_error_not_a_crash(name: str) -> None:
    g = Graph("M")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (2,)))
    g.outputs = [b("add", x, b.add_param(f"blocks.0.{name}", TensorType(DType.f32, (2,)), Init("ones")))]
    with pytest.raises(shipei.ShipeiError, match=f"'{name}' .* cannot name a layer or parameter on the torch target"):
        emit(g, "torch")


def test_python_keywords_name_layers_through_getattr() -> None:
    source = """
    model M() {
        `for` = Linear(3, 2)
        param `class`: f32[2] = ones()
        forward(x: f32[B, 3]) -> f32[B, 2] { return `for`(x) + `class` }
    }
    """
    compiled = shipei.compile(source, "torch")
    assert "setattr(self, 'for', torch.nn.Module())" in compiled.source
    exe = compiled.load(device="cpu")
    assert sorted(exe._model.state_dict()) == ["class", "for.bias", "for.weight"]
    x = np.ones((2, 3), np.float32)
    assert compare(exe.run(x)[0], shipei.reference(compiled.ir, [x], compiled.weights)[0], DType.f32).ok


GOLDEN = '''\
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Module()
        self.fc.weight = torch.nn.Parameter(torch.empty((4, 3), dtype=torch.float32))

    def forward(self, x):
        v0 = x @ self.fc.weight
        v1 = relu_keeping_nan(v0);  del v0
        v2 = v1 * 0.5;  del v1
        return v2
'''


def test_generated_module_reads_as_written() -> None:
    g = Graph("Tiny")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (Sym.named("B"), 4)))
    w = b.add_param("fc.weight", TensorType(DType.f32, (4, 3)), Init("zeros"))
    half = b("constant", value=np.float32(0.5), dtype=DType.f32)
    g.outputs = [b("mul", b("relu", b("matmul", x, w)), half)]
    source = emit(g, "torch").source
    assert GOLDEN in source
    assert source.startswith('"""Tiny, generated by shipei from <graph> for torch.')


def test_window_attributes_are_written_as_pairs() -> None:
    """`max_pool2d(y, 2, stride=2)` holds 1-tuples; torch takes them, but its ONNX exporter copies them
    as they are and ONNX Runtime refuses the model ("Attribute dilations has incorrect size")."""
    source = shipei.compile(EXAMPLES / "cnn.sp", "torch").source
    assert " max_pool2d(y, (2, 2), stride=(2, 2), padding=(0, 0))" in source  # its helper, over F.max_pool2d
    calls = re.findall(r"(?:F\.conv2d|max_pool2d|F\.avg_pool2d)\(.*", source)
    assert calls and not any(re.search(r"\(\d+,\)", call) for call in calls)
