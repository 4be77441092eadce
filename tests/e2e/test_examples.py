"""Each example model, end to end: DSL -> IR -> generated torch program -> run == reference."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from shipei.ir.inputs import random_inputs
from shipei.ir.tolerance import compare
from shipei.runtime import DeviceFallbackWarning

import shipei

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DIMS = {"B": 3, "T": 12}


@pytest.mark.parametrize("example", ["mlp.sp", "cnn.sp", "transformer.sp"])
def test_example_on_torch_matches_reference(example: str) -> None:
    compiled = shipei.compile(EXAMPLES / example, "torch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exe = compiled.load()
    if exe.device == "cpu":  # no GPU here: the fallback must be visible, never silent
        assert exe.fell_back and any(issubclass(w.category, DeviceFallbackWarning) for w in caught)
    inputs = random_inputs(compiled.ir, seed=1, dims=DIMS)
    outputs = exe.run(*inputs)
    expected = shipei.reference(compiled.ir, inputs, compiled.weights)
    for value, got, want in zip(compiled.ir.outputs, outputs, expected):
        assert got.shape == want.shape
        worst = compare(got, want, value.dtype)
        assert worst.ok, worst


def test_saved_program_runs_standalone_without_shipei(tmp_path: Path) -> None:
    """The generated module imports only torch, numpy and safetensors: run it as a script."""
    path = shipei.compile(EXAMPLES / "mlp.sp", "torch").save(tmp_path)
    source = path.read_text()
    assert "shipei" not in [line.split()[1].split(".")[0] for line in source.splitlines()
                            if line.startswith(("import ", "from "))]
    result = subprocess.run([sys.executable, "-I", str(path)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(2, 10) float32" in result.stdout and "device: " in result.stdout


def test_load_a_saved_directory_matches_compiled(tmp_path: Path) -> None:
    compiled = shipei.compile(EXAMPLES / "mlp.sp", "torch", seed=3)
    compiled.save(tmp_path)
    exe = shipei.load(tmp_path, "torch", device="cpu")
    x = random_inputs(compiled.ir, seed=0)
    expected = shipei.reference(compiled.ir, x, compiled.weights)[0]
    assert compare(exe(*x), expected, compiled.ir.outputs[0].dtype).ok


def test_executable_checks_inputs_before_the_framework_sees_them() -> None:
    exe = shipei.compile(EXAMPLES / "mlp.sp", "torch").load(device="cpu")
    with pytest.raises(shipei.ShipeiError, match=r"input 'x': expected f32\[B, 784\]"):
        exe.run(random_inputs(exe.graph)[0][:, :100])
    with pytest.raises(shipei.ShipeiError, match="takes 1 inputs"):
        exe.run()


def test_missing_device_is_an_error_unless_fallback_is_allowed() -> None:
    compiled = shipei.compile(EXAMPLES / "mlp.sp", "torch")
    with pytest.raises(shipei.ShipeiError, match="device 'tpu' is not available to target 'torch'"):
        compiled.load(device="tpu", allow_fallback=False)
    with pytest.warns(DeviceFallbackWarning):
        assert compiled.load(device="tpu", allow_fallback=True).device == "cpu"
