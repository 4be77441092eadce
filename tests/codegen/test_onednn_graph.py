"""The torch target's oneDNN graph (`onednn_graph`): on CPU, `call` runs the model traced per
input shape and frozen through TorchScript's oneDNN Graph fuser. What it runs must be what forward
computes: checked against shipei's reference interpreter, across shapes, weight changes and the
fuser's refusals."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from non_finite import with_non_finite
from shipei.ir.inputs import random_inputs
from shipei.ir.tolerance import compare
from shipei.ir.types import DType

import shipei

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DIMS = {"mlp": {"B": 16}, "cnn": {"B": 4}, "transformer": {"B": 2, "T": 16}}


def _matches(compiled: shipei.Compiled, exe, x: list[np.ndarray], weights=None) -> bool:
    want = shipei.reference(compiled.ir, x, compiled.weights if weights is None else weights)
    got = exe.run(*x)
    return all(np.shape(g) == w.shape and compare(np.asarray(g), w, DType.f32).ok
               for g, w in zip(got, want, strict=True))


def _graphs(exe) -> dict:
    """The input signatures `call` has traced for, each to its first graph's forward (None: eager)."""
    return {key: next(iter(entry.forward.values())) for key, entry in exe.module._GRAPHS.get(exe._model, {}).items()}


def _fused(exe, x: list[np.ndarray]) -> str:
    """The graph TorchScript last ran for `x`: the fuser's partitions show as oneDNNFusionGroup."""
    exe.run(*x)
    return str(torch.jit.last_executed_optimized_graph())


@pytest.mark.parametrize("name", sorted(DIMS))
def test_the_examples_run_as_fused_onednn_graphs_that_compute_the_reference(name: str) -> None:
    compiled = shipei.compile(EXAMPLES / f"{name}.sp", "torch")
    assert "ONEDNN_GRAPH = True" in compiled.source
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims=DIMS[name])
    assert _matches(compiled, exe, x)
    (forward,) = _graphs(exe).values()
    assert forward is not None and "prim::oneDNNFusionGroup" in _fused(exe, x)


def test_inputs_within_the_proven_bound_take_the_fused_forms_and_the_others_the_graph_that_keeps_nan() -> None:
    """The example ResNet (GUARDED_GRAPH): finite inputs within the bound take the graph of the
    fuser's relu and max pool, fused into its partitions; inputs past the bound or holding a NaN
    take the graph of the forms that keep NaN, traced at the first of them; both compute the
    reference."""
    compiled = shipei.compile(EXAMPLES / "cnn.sp", "torch")
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims=DIMS["cnn"])
    assert _matches(compiled, exe, x)
    (entry,) = exe.module._GRAPHS[exe._model].values()
    assert list(entry.forward) == [True] and entry.bound >= 2.0 ** 15
    fast = _fused(exe, x)
    assert "aten::clamp_min" not in fast and "aten::maximum" not in fast  # relu and the pool fused
    past = [a * np.float32(2 * entry.bound / np.abs(a).max()) for a in x]
    exe.run(*past)
    assert list(entry.forward) == [True, False]
    assert "aten::clamp_min" in _fused(exe, past)
    nan = [with_non_finite(a) for a in x]
    assert _matches(compiled, exe, nan) and _matches(compiled, exe, x)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_the_bound_check_reads_every_element_in_any_layout(layout: str) -> None:
    """A pipeline stage's input is often another stage's channels-last result, which the check
    reads in its memory's order; one element past the bound, or a NaN, anywhere fails it."""
    module = shipei.compile(EXAMPLES / "cnn.sp", "torch").load(device="cpu").module
    base = torch.rand(4, 6, 5, 8) * 2 - 1
    t = {"contiguous": base, "channels_last": base.contiguous(memory_format=torch.channels_last),
         "strided": base[:, :, :, ::2]}[layout]
    assert module._within([t], 1.0)
    for index in [(0, 0, 0, 0), (3, 5, 4, 3), (1, 2, 3, 1)]:
        for bad in (1.5, -1.5, float("nan")):
            u = t.clone(memory_format=torch.preserve_format)
            u[index] = bad
            assert not module._within([u], 1.0), (index, bad)


def test_each_input_shape_gets_its_own_graph_up_to_the_limit_then_forward_runs_eagerly() -> None:
    compiled = shipei.compile(EXAMPLES / "mlp.sp", "torch")
    exe = compiled.load(device="cpu")
    exe.module.ONEDNN_GRAPH_SHAPES = 2
    for batch in (16, 3, 16, 7):
        x = random_inputs(compiled.ir, seed=batch, dims={"B": batch})
        assert _matches(compiled, exe, x)
    assert [key[0][0] for key in _graphs(exe)] == [torch.Size([16, 784]), torch.Size([3, 784])]
    before = len(_graphs(exe))
    assert _matches(compiled, exe, random_inputs(compiled.ir, seed=1, dims={"B": 7}))
    assert len(_graphs(exe)) == before  # past the limit: forward itself, nothing traced


def test_weights_written_in_place_or_reloaded_are_the_ones_the_graph_computes_with() -> None:
    """The graph's weights are frozen constants: a weight written since is traced again."""
    compiled = shipei.compile(EXAMPLES / "mlp.sp", "torch")
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 16})
    assert _matches(compiled, exe, x)
    first = next(iter(_graphs(exe).values()))
    new = {k: (v * 0.5 + 0.1).astype(v.dtype) for k, v in compiled.weights.items()}
    exe.module.assign(exe._model, {k: torch.from_numpy(v) for k, v in new.items()})
    assert _matches(compiled, exe, x, new)
    assert next(iter(_graphs(exe).values())) is not first
    with torch.no_grad():
        exe._model.fc2.bias.add_(1.0)  # behind the program's back, as a user might
    new["fc2.bias"] = new["fc2.bias"] + 1.0
    assert _matches(compiled, exe, x, new)
    exe.load_weights(compiled.weights)
    assert _matches(compiled, exe, x)


def test_a_graph_the_fuser_computes_otherwise_runs_eagerly_and_says_so(capsys: pytest.CaptureFixture) -> None:
    """oneDNN Graph reads gelu's tanh approximation as the exact gelu: at most 0.0005 apart, past
    f32's tolerance, so the traced graph is checked against forward and refused."""
    compiled = shipei.compile("""
    model M() {
        fc = Linear(64, 64)
        forward(x: f32[B, 64]) -> f32[B, 64] {
            return gelu(fc(x) * 4.0, approximate="tanh")
        }
    }
    """, "torch")
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 32})
    assert _matches(compiled, exe, x)
    assert list(_graphs(exe).values()) == [None]
    assert "M runs eagerly, not as a oneDNN graph: result 0 differs from forward's" in capsys.readouterr().err


# compiles a model whose row `s` two of the fuser's binary ops read broadcast (beside a linear, which
# has the program traced), and runs it three times
SHARED_ROW = """
import numpy as np
import shipei
from shipei.ir.inputs import random_inputs
from shipei.ir.tolerance import compare
from shipei.ir.types import DType
compiled = shipei.compile(\"\"\"
model M() {{
    fc = Linear(16, 16)
    forward(x: f32[B, 16], y: f32[B, 16], s: f32[16]) -> (f32[B, 16], f32[B, 16]) {{
        return fc(x), {expression}
    }}
}}
\"\"\", "torch")
exe = compiled.load(device="cpu")
x = random_inputs(compiled.ir, seed=0, dims={{"B": 8}})
want = shipei.reference(compiled.ir, x, compiled.weights)
for _ in range(3):
    assert all(compare(np.asarray(got), w, DType.f32).ok for got, w in zip(exe.run(*x), want, strict=True))
"""


@pytest.mark.parametrize("expression", ["y * s + s", "y * s / s", "y * (s / (s * s + 1.0)) + s"])
def test_a_tensor_two_fused_binary_ops_read_broadcast_runs_eagerly_and_says_so(expression: str) -> None:
    """torch's oneDNN Graph bridge crashes the process at the first run of a partition that reads
    one tensor twice, broadcast (a subprocess, so that a crash fails this test alone)."""
    run = subprocess.run([sys.executable, "-c", SHARED_ROW.format(expression=expression)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "M runs eagerly, not as a oneDNN graph: %s is read by two of its adds, multiplies or divisions" in run.stderr


def test_a_layer_norm_whose_weight_is_an_input_runs_in_the_graph(capsys: pytest.CaptureFixture) -> None:
    """The normalized shape is written out: taken from the weight's sizes, the frozen graph read it
    as garbage ("Expected IntList but got InvalidTag") and the model ran eagerly."""
    compiled = shipei.compile("""
    model M() {
        fc = Linear(16, 16)
        forward(x: f32[B, 16], w: f32[16], b: f32[16]) -> f32[B, 16] {
            return layer_norm(fc(x), w, b)
        }
    }
    """, "torch")
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 8})
    assert _matches(compiled, exe, x) and _matches(compiled, exe, x)
    assert None not in _graphs(exe).values() and "runs eagerly" not in capsys.readouterr().err


def test_a_layer_norm_over_a_shape_known_only_at_run_time_runs_eagerly_and_says_so(
        capsys: pytest.CaptureFixture) -> None:
    """Its shape is then taken from the weight's sizes, which the frozen graph reads as garbage."""
    compiled = shipei.compile("""
    model M() {
        fc = Linear(16, 16)
        forward(x: f32[B, 16], w: f32[B, 16], b: f32[B, 16]) -> f32[B, 16] {
            return layer_norm(fc(x), w, b)
        }
    }
    """, "torch")
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 8})
    assert _matches(compiled, exe, x)
    assert list(_graphs(exe).values()) == [None]
    assert "M runs eagerly, not as a oneDNN graph: a layer norm's shape is read from a tensor's sizes" in \
        capsys.readouterr().err


def test_a_0_d_result_stays_0_d(capsys: pytest.CaptureFixture) -> None:
    """The fuser returns the 0-d add as 1-d; the check against forward refuses the graph."""
    compiled = shipei.compile("""
    model M() {
        param w: f32[8, 8] = uniform(low=-1.0, high=1.0)
        param v: f32[] = uniform(low=-1.0, high=1.0)
        forward(x: f32[8, 8], s: f32[]) -> (f32[8, 8], f32[]) {
            return x @ w, s + v
        }
    }
    """, "torch")
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0)
    assert _matches(compiled, exe, x)
    assert list(_graphs(exe).values()) == [None]
    assert "result 1 is torch.float32 [1], forward's torch.float32 []" in capsys.readouterr().err


def test_only_graphs_with_a_convolution_or_product_and_no_amp_or_compile_are_traced() -> None:
    elementwise = "model M() { forward(x: f32[B, 8]) -> f32[B, 8] { return relu(x) * 2.0 } }"
    assert "ONEDNN_GRAPH = False" in shipei.compile(elementwise, "torch").source
    for options in ({"amp": "bf16"}, {"compile": True}, {"onednn_graph": False}):
        assert "ONEDNN_GRAPH = False" in shipei.compile(EXAMPLES / "mlp.sp", "torch", options=options).source


def test_threads_calling_one_model_at_once_each_get_their_results() -> None:
    """Threads tracing one model at once, for one shape and for others, each run a graph of their
    own shape (or forward) and none sees another's results."""
    compiled = shipei.compile(EXAMPLES / "cnn.sp", "torch")
    exe = compiled.load(device="cpu")
    batches = [random_inputs(compiled.ir, seed=seed, dims={"B": b}) for seed, b in enumerate([4, 2, 4, 3, 2, 4])]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda x: exe.run(*x), batches))
    for x, got in zip(batches, results, strict=True):
        want = shipei.reference(compiled.ir, x, compiled.weights)
        assert all(compare(g, w, DType.f32).ok for g, w in zip(got, want, strict=True))
    assert {key[0][0][0] for key in _graphs(exe)} == {2, 3, 4}


def test_the_graph_takes_inputs_in_their_own_layout_and_records_no_autograd() -> None:
    """`call` hands the cnn's NCHW input to the graph as it came (the eager program's channels-last
    copy is forward's alone), outside inference mode: its results are plain tensors that record
    nothing. An input that requires grad runs forward in inference mode, as before."""
    compiled = shipei.compile(EXAMPLES / "cnn.sp", "torch")
    assert "CHANNELS_LAST = True" in compiled.source
    exe = compiled.load(device="cpu")
    x = torch.from_numpy(random_inputs(compiled.ir, seed=0, dims={"B": 4})[0])
    (y,) = exe.module.call(exe._model, x)
    assert [key[0][1] for key in _graphs(exe)] == [x.stride()]
    assert not y.requires_grad and not y.is_inference()
    want = shipei.reference(compiled.ir, [x.numpy()], compiled.weights)[0]
    assert compare(y.numpy(), want, DType.f32).ok
    (z,) = exe.module.call(exe._model, x.clone().requires_grad_(True))
    assert z.is_inference() and len(_graphs(exe)) == 1
    assert compare(z.numpy(), want, DType.f32).ok


@pytest.mark.parametrize(("kernel", "bias", "x"), [("softmax", "true", "f32[B, 32]"),
                                                   ("log_softmax", "false", "f32[B, 3, 32]")])
def test_a_narrow_head_runs_padded_to_whole_vectors_and_returns_its_columns(kernel: str, bias: str, x: str) -> None:
    """The graph's head is computed 16 wide, the padding's logits -inf: `call` returns a view of its
    first columns, `run` a row-major copy, both the reference's values."""
    compiled = shipei.compile(f"""
    model M() {{
        fc1 = Linear(32, 64)
        head = Linear(64, 5, bias={bias})
        forward(x: {x}) -> f32[{x[4:x.rindex(",")]}, 5] {{
            return {kernel}(head(relu(fc1(x))), axis=-1)
        }}
    }}
    """, "torch")
    assert "= narrow_head(" in compiled.source
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims={"B": 24})
    (want,) = shipei.reference(compiled.ir, x, compiled.weights)
    (got,) = exe.run(*x)
    assert got.flags.c_contiguous and compare(got, want, DType.f32).ok
    (y,) = exe.module.call(exe._model, torch.from_numpy(x[0]))
    assert y.stride()[-2:] == (16, 1)
    assert compare(y.numpy(), want, DType.f32).ok


_LINEAR = "fc = Linear(256, 256)\n forward(x: f32[B, 256]) -> f32[B, 256] {{ return {0} }}"
_CONV = "c = Conv2d(16, 16, 3, padding=1)\n forward(x: f32[B, 16, 8, 8]) -> f32[B, 16, {1}, {1}] {{ return {0} }}"
#: Where a NaN or an infinity meets an op that oneDNN computes otherwise than torch on them, each in
#: a program (B=128) that packs and fuses its product on the eager path.
NON_FINITE_CASES = {
    **{f"linear-{act}": (_LINEAR.format(f"{act}(fc(x))"), {}) for act in ("relu", "sigmoid", "tanh", "silu", "gelu")},
    **{f"conv-{act}": (_CONV.format(f"{act}(c(x))", 8), {}) for act in ("relu", "sigmoid", "tanh", "silu")},
    "conv-add-relu": (_CONV.format("relu(c(x) + x)", 8), {}),
    "conv-max_pool": (_CONV.format("max_pool2d(c(x), 2, stride=2)", 4), {}),
    "linear-exp": (_LINEAR.format("exp(fc(x))"), {}),
    "in-place-relu-exp": ("fc = Linear(256, 256)\n fc2 = Linear(256, 256)\n"
                          " forward(x: f32[B, 256]) -> (f32[B, 256], f32[B, 256]) {\n"
                          " y = fc(x)\n return fc2(relu(y * 2.0)), exp(y * 0.5) }", {"opt": 3}),
}


@pytest.mark.parametrize("path", ["graph", "eager"])
@pytest.mark.parametrize("case", [*NON_FINITE_CASES, "mlp", "cnn"])
def test_nan_and_infinities_come_out_as_the_reference_computes_them(case: str, path: str) -> None:
    """oneDNN computes relu and max pools with NaN dropped (max(x, 0) is 0) and exp of NaN as inf,
    in the graph's partitions and as the eager program's fused post-ops: the program leaves those
    to torch, which keeps NaN. Checked on both paths, the graph traced on finite inputs first."""
    if case in NON_FINITE_CASES:
        body, kwargs = NON_FINITE_CASES[case]
        source, dims = "model M() {\n" + body + "\n}", {"B": 128}
    else:
        source, dims, kwargs = EXAMPLES / f"{case}.sp", DIMS[case], {}
    compiled = shipei.compile(source, "torch", options={"onednn_graph": path == "graph"}, **kwargs)
    exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=0, dims=dims)
    assert _matches(compiled, exe, x)
    assert (path == "graph") == any(forward is not None for forward in _graphs(exe).values())
    x[0] = with_non_finite(x[0])
    want = shipei.reference(compiled.ir, x, compiled.weights)
    assert all(np.isnan(w).any() for w in want)
    got = exe.run(*x)
    if case == "linear-gelu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        # torch's exact gelu of +inf is NaN in its AVX-512 kernel, the reference's inf: known-differences.md
        inf = np.isposinf(want[0])
        assert inf.any() and np.isnan(got[0][inf]).all()
        got[0][inf] = np.inf
    for g, w in zip(got, want, strict=True):
        assert compare(np.asarray(g), w, DType.f32).ok
