"""Heterogeneous execution as a user runs it: the examples split over two, three and four
frameworks, and placed automatically, compute what the reference does; micro-batched pipelines
equal unsplit runs; hand-offs are logged; a saved pipeline runs without shipei; bad placements
are clear errors before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from shipei.ir.tolerance import compare
from shipei.runtime import DeviceFallbackWarning

import shipei
from shipei.cli import main
from shipei.testing import available_targets
from shipei.testing.lowering import run_partitioned

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RNG = np.random.default_rng(0)
INPUTS = {
    "mlp.sp": lambda: [RNG.standard_normal((4, 784)).astype(np.float32)],
    "cnn.sp": lambda: [RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)],
    "transformer.sp": lambda: [RNG.integers(0, 512, (2, 16))],
}
#: Each example over two, three and four frameworks, by module path (accelerate's spelling).
SPLITS = {
    "mlp.sp": [{"fc1": "torch:cpu", "*": "jax:cpu"},
               {"fc1": "tf:cpu", "fc2": "mindspore:cpu", "*": "jax:cpu"}],
    "cnn.sp": [{"stem": "jax:cpu", "*": "torch:cpu"},
               {"layers.1": "mindspore:cpu", "*": "torch:cpu"},
               {"layers.0": "tf:cpu", "layers.1": "mindspore:cpu", "*": "torch:cpu"}],
    "transformer.sp": [{"h.0": "torch:cpu", "*": "jax:cpu"},
                       {"h.0": "torch:cpu", "h.1": "jax:cpu", "*": "tf:cpu"},
                       {"wte": "mindspore:cpu", "h.0": "torch:cpu", "h.1": "jax:cpu", "*": "tf:cpu"}],
}
CASES = [(name, split) for name, splits in SPLITS.items() for split in splits]


def _check(compiled: shipei.CompiledPipeline, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
    expected = shipei.reference(compiled.ir, inputs, compiled.weights)
    for value, got, want in zip(compiled.ir.outputs, outputs, expected):
        worst = compare(got, want, value.dtype)
        assert worst.ok, worst


@pytest.mark.parametrize("example, device_map", CASES, ids=[f"{n}-{len(set(m.values()))}fw" for n, m in CASES])
def test_an_example_split_over_frameworks_computes_what_the_reference_does(example: str, device_map: dict) -> None:
    compiled = shipei.compile(EXAMPLES / example, device_map=device_map)
    used = {s.placement.target for s in compiled.plan.stages}
    assert used == {p.split(":")[0] for p in device_map.values()}
    inputs = INPUTS[example]()
    exe = compiled.load(pin=False)
    try:
        _check(compiled, inputs, exe.run(*inputs))
        assert exe.transfers and all(t.bytes > 0 and t.seconds >= 0 for t in exe.transfers)
        targets = [s.placement.target for s in compiled.plan.stages]
        # f32 activations go by DLPack, but MindSpore's (never 64-byte aligned) are copied for XLA: jax
        # copies them itself, and tf's accept does (its compiled gradients crashed on them). A torch
        # program that convolves keeps its activations channels-last, strides the others copy.
        channels_last = example == "cnn.sp"
        for t in exe.transfers:
            unaligned = targets[t.source] == "mindspore" and targets[t.destination] in ("jax", "tf")
            strided = channels_last and targets[t.source] == "torch"
            assert t.copied == (unaligned or strided), t
    finally:
        exe.close()


@pytest.mark.parametrize("example", sorted(INPUTS))
def test_every_example_runs_with_device_map_auto(example: str) -> None:
    compiled = shipei.compile(EXAMPLES / example, device_map="auto")
    assert all(s.placement.target in available_targets() for s in compiled.plan.stages)
    inputs = INPUTS[example]()
    exe = compiled.load(pin=False)
    try:
        _check(compiled, inputs, exe.run(*inputs))
    finally:
        exe.close()


def test_micro_batches_give_what_one_batch_gives() -> None:
    compiled = shipei.compile(EXAMPLES / "transformer.sp", device_map={"h.0": "torch:cpu", "*": "jax:cpu"})
    tokens = RNG.integers(0, 512, (8, 16))
    exe = compiled.load()  # pinned worker threads, as a user gets them
    try:
        whole = exe.run(tokens)[0]
        for micro_batches in (2, 3, 8, 20):
            np.testing.assert_allclose(exe.run(tokens, micro_batches=micro_batches)[0], whole, rtol=1e-5, atol=1e-6)
        assert {(t.source, t.destination) for t in exe.transfers} == {(0, 1), (1, 2)}
        assert len(exe.transfers) == 2 * 8  # one hand-off per boundary per micro-batch (20 asked, 8 rows)
    finally:
        exe.close()


def test_a_model_that_mixes_batch_rows_cannot_be_micro_batched() -> None:
    compiled = shipei.compile("""model M() {
        forward(x: f32[B, 4]) -> f32[4] {
            @on(jax:cpu) y = relu(x)
            return sum(y, axis=0)
        }
    }""", device_map={"*": "torch:cpu"})
    exe = compiled.load(pin=False)
    try:
        with pytest.raises(shipei.ShipeiError, match="micro-batching: 'reduce_sum' combines elements along batch"):
            exe.run(np.ones((4, 4), np.float32), micro_batches=2)
        np.testing.assert_array_equal(exe.run(np.ones((4, 4), np.float32))[0], np.full(4, 4, np.float32))
    finally:
        exe.close()


def test_a_saved_pipeline_runs_without_shipei_and_loads_back(tmp_path: Path) -> None:
    compiled = shipei.compile(EXAMPLES / "mlp.sp", device_map={"fc1": "torch:cpu", "*": "tf:cpu"})
    driver = compiled.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mlp.ir", "mlp_pipeline.py", "mlp_stage0.safetensors", "mlp_stage0_torch.py", "mlp_stage1.safetensors",
        "mlp_stage1_tf.py"]
    env = {"PYTHONPATH": "", "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-I", str(driver)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)  # -I: no site-packages of ours beyond the venv's, no shipei import
    assert done.returncode == 0, done.stderr
    assert "(2, 10) float32" in done.stdout and "stage 0 -> 1: 2048 bytes, zero-copy" in done.stdout
    exe = shipei.load(tmp_path)
    try:
        x = INPUTS["mlp.sp"]()
        _check(compiled, x, exe.run(*x))
    finally:
        exe.close()


def test_the_driver_reads_as_a_table_of_stages() -> None:
    compiled = shipei.compile(EXAMPLES / "transformer.sp", device_map={"h.0": "torch:cpu", "*": "jax:cpu"})
    head = compiled.source.split('"""')[1]
    assert "GPT in 3 stages over jax and torch" in head
    assert "stage 1  torch:cpu  gpt_stage1_torch.py  h.0" in head
    reads = compiled.source.split("READS = [\n")[1].split("]\n")[0]
    assert reads.startswith("    [('input', 0)],\n    [(0, 0)],\n")


def test_bad_calls_of_a_pipeline_are_clear_errors() -> None:
    """A call after close() waited for the ended stages for ever; micro_batches of None, "2" or nan,
    a stage past the last and repeats=0 were tracebacks; True and 2.5 micro-batches ran as 1 and 2."""
    compiled = shipei.compile(EXAMPLES / "mlp.sp", device_map=SPLITS["mlp.sp"][0])
    exe = compiled.load(pin=False)
    x = INPUTS["mlp.sp"]()
    try:
        for bad in (0, None, "2", float("nan"), True, 2.5):
            with pytest.raises(shipei.ShipeiError, match=f"micro_batches must be a whole number >= 1, got {bad!r}"):
                exe.run(*x, micro_batches=bad)
        _check(compiled, x, exe.run(*x, micro_batches=np.int64(3)))
        with pytest.raises(shipei.ShipeiError, match="MLP's pipeline has stages 0 to 1, not 2"):
            exe.on_stage(2, lambda stage: stage)
        with pytest.raises(shipei.ShipeiError, match="repeats must be a whole number >= 1, got 0"):
            exe.time_stages(*x, repeats=0)
    finally:
        exe.close()
    for call in (lambda: exe.run(*x), lambda: exe.on_stage(0, lambda stage: stage)):
        with pytest.raises(shipei.ShipeiError, match="MLP's pipeline was closed: its stages have ended"):
            call()


def test_an_absent_device_is_an_error_unless_fallback_is_allowed() -> None:
    compiled = shipei.compile(EXAMPLES / "mlp.sp", device_map={"fc1": "mindspore:ascend", "*": "jax:cpu"})
    with pytest.raises(shipei.ShipeiError, match="mindspore:ascend is not available here"):
        compiled.load(pin=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exe = compiled.load(allow_fallback=True, pin=False)
    try:
        assert exe.fell_back and any(issubclass(w.category, DeviceFallbackWarning) for w in caught)
        assert exe.placements[0] == "mindspore:ascend (cpu)"
        x = INPUTS["mlp.sp"]()
        _check(compiled, x, exe.run(*x))
    finally:
        exe.close()


def test_a_gpu_placement_s_number_names_the_device_unless_the_process_sees_only_its_own(tmp_path: Path) -> None:
    """A plan's torch:cuda:3 is the fourth GPU of its machine where the stages share one process;
    a Ray actor sees only the GPU Ray gave it, as its cuda:0 (it asked for cuda:3 and failed)."""
    from shipei.runtime.executable import import_module_file

    compiled = shipei.compile(EXAMPLES / "mlp.sp", device_map={"fc1": "torch:cuda:3", "*": "jax:cuda:1"})
    driver = import_module_file(compiled.save(tmp_path))
    assert driver._device(["cuda", "cpu"], "torch:cuda:3", False) == ("cuda:3", False)
    assert driver._device(["cuda", "cpu"], "torch:cuda:3", False, numbered=False) == ("cuda", False)
    assert driver._device(["gpu", "cpu"], "jax:cuda:1", False, numbered=False) == ("gpu", False)
    assert driver._device(["cpu"], "torch:cuda:3", True, numbered=False) == ("cpu", True)
    with pytest.raises(RuntimeError, match="torch:cuda:3 is not available here"):
        driver._device(["cpu"], "torch:cuda:3", False, numbered=False)


@pytest.mark.parametrize("device_map, message", [
    ({"h.9": "torch:cpu"}, "the device map names 'h.9', which is not a module of GPT"),
    ({"h.0": "torch:gpux"}, "device map entry 'h.0': unknown target or device 'gpux'"),
    ({"h.0": 3}, "device map entry 'h.0': 3 should map a module path to a placement string"),
])
def test_a_bad_device_map_is_an_error_before_anything_runs(device_map: dict, message: str) -> None:
    with pytest.raises(shipei.ShipeiError, match=message.replace("(", r"\(")):
        shipei.compile(EXAMPLES / "transformer.sp", device_map=device_map)


def test_the_command_line_runs_and_checks_a_split_model(capsys: pytest.CaptureFixture[str]) -> None:
    split = json.dumps({"h.0": "torch:cpu", "h.1": "jax:cpu", "*": "tf:cpu"})
    assert main(["run", str(EXAMPLES / "transformer.sp"), "--device-map", split, "--dim", "B=4", "--dim", "T=16",
                 "--micro-batches", "2", "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("placed: 20/47 nodes torch:cpu, 20 jax:cpu, 7 tf:cpu, 4 stages, 3 transfers")
    assert "GPT in 4 stages: tf:cpu (cpu), torch:cpu (cpu), jax:cpu (cpu), tf:cpu (cpu); 6 hand-offs" in out
    assert "check output 0:" in out and "ok" in out
    assert main(["run", str(EXAMPLES / "transformer.sp"), "--device-map", "{not json"]) == 1
    assert "--device-map is not JSON" in capsys.readouterr().err


def test_ir_placement_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ir", str(EXAMPLES / "mlp.sp"), "--placement", "--device-map", '{"fc1": "jax:cpu", "*": "torch:cpu"}'
                 ]) == 0
    out = capsys.readouterr().out
    assert out.startswith("// placed: 4/5 nodes torch:cpu, 1 jax:cpu, 2 stages, 1 transfer")
    assert "= linear(%x, %fc1.weight, %fc1.bias) : f32[B, 256] on jax:cpu  // device map" in out
    assert "= transfer(" in out and "bytes" in out


def test_partition_draws_the_stages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = json.dumps({"layers.0": "tf:cpu", "layers.1": "mindspore:cpu", "*": "torch:cpu"})
    svg, page = tmp_path / "cnn.svg", tmp_path / "cnn.html"
    assert main(["partition", str(EXAMPLES / "cnn.sp"), "--device-map", split, "--svg", str(svg),
                 "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "  stage 1  tf:cpu              5 nodes (+16 at load)  layers.0" in out and f"wrote {svg}" in out
    assert svg.read_text().startswith("<svg") and "mindspore:cpu" in svg.read_text()
    assert "<table" in page.read_text() and "layers.1" in page.read_text()
    assert main(["partition", str(EXAMPLES / "cnn.sp")]) == 1
    assert "nothing to partition" in capsys.readouterr().err


def test_a_stage_that_makes_a_shape_from_a_symbol_alone_reads_an_input_that_binds_it() -> None:
    """`arange(B)` placed apart from every value of shape [B]: its stage reads x0 too, which binds
    B (found by the placement fuzzer: the stage's program could not name B)."""
    graph = shipei.parse("""
    model G() {
        forward(x0: f32[B], x1: f32[], x2: i64[], x3: f32[]) -> (bool[B], i64[], f32[B], f32[]) {
            return x0 < x1, abs(x2), arange(B, dtype=f32), abs(x3)
        }
    }
    """)
    inputs = [np.arange(3, dtype=np.float32), np.float32(1.0), np.int64(-2), np.float32(-3.0)]
    got = run_partitioned(graph, inputs, {}, ["torch:cpu", None, None, None], ["torch", "jax", "tf", "mindspore"])
    for value, want in zip(got, shipei.reference(graph, inputs)):
        np.testing.assert_array_equal(value, want)
