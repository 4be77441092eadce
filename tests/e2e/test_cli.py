"""The command line, as a user runs it: exit codes, output and error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shipei.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP = str(EXAMPLES / "mlp.sp")


def test_check_prints_the_signature(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", MLP]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MLP(x: f32[B, 784]) -> (f32[B, 10])")
    assert "203,530 parameters in 4 tensors" in out


def test_check_with_overridden_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", MLP, "--set", "hidden=32"]) == 0
    assert "25,450 parameters" in capsys.readouterr().out


def test_the_elaboration_limits_are_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "deep.sp"
    model.write_text("model D(n: int = 300) {\n    for i in range(n) { h[i] = Linear(4, 4) }\n"
                     "    forward(x: f32[B, 4]) -> f32[B, 4] { return x }\n}\n")
    assert main(["check", str(model), "--max-size", "500"]) == 1
    assert "deep.sp:2:38: error: the model grew past 500 ops, params and layers" in capsys.readouterr().err
    assert main(["check", str(model), "--max-loop", "200"]) == 1
    assert "range() of 300 items is past the limit of 200 loop iterations" in capsys.readouterr().err
    assert main(["check", str(model), "--max-size", "1000"]) == 0
    assert "600 tensors" in capsys.readouterr().out


def test_ir_prints_textual_ir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ir", MLP, "-O0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("graph @MLP(%x: f32[B, 784], %fc1.weight: param f32[256, 784]")
    assert "matmul(%x, %0) : f32[B, 256]" in out
    assert main(["ir", MLP]) == 0  # -O2 by default
    assert "linear(%x, %fc1.weight, %fc1.bias) : f32[B, 256]" in capsys.readouterr().out


def test_compile_writes_program_weights_and_ir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", MLP, "--target", "torch", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.ir", "mlp.safetensors", "mlp_torch.py"]


def test_run_check_passes_and_reports_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(EXAMPLES / "cnn.sp"), "--target", "torch", "--check", "--dim", "B=2"]) == 0
    out = capsys.readouterr().out
    assert "ResNet on torch (cpu)" in out and "check output 0: max error" in out and " ok" in out


def test_run_with_inputs_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "in.npz", x=np.ones((3, 784), np.float32))
    assert main(["run", MLP, "--inputs", str(tmp_path / "in.npz"), "--check"]) == 0
    assert "output f32[3, 10]" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", y=np.ones((3, 784), np.float32))
    assert main(["run", MLP, "--inputs", str(tmp_path / "bad.npz")]) == 1
    assert "has no array for input(s) x" in capsys.readouterr().err


def test_user_errors_exit_1_with_a_located_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.sp"
    bad.write_text("model M() {\n  forward(x: f32[4]) -> f32[4] {\n    return relu(y)\n  }\n}\n")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:17: error: unknown name 'y'" in err
    assert "Traceback" not in err
    assert main(["check", str(tmp_path / "missing.sp")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["check", MLP, "--set", "hidden=wide"]) == 1
    assert "'wide' is not an int, float or bool" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "shipei", "check", MLP], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("MLP(")
    bad = tmp_path / "syntax.sp"
    bad.write_text("model M( {\n}\n")
    res = subprocess.run([sys.executable, "-m", "shipei", "check", str(bad)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1 and f"{bad}:1:" in res.stderr and "Traceback" not in res.stderr


def test_compression_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """quantize and prune say what they did; --check then compares with the float model."""
    assert main(["run", MLP, "--passes", "quantize,dce", "--freeze", "--check"]) == 1
    out = capsys.readouterr().out
    dense, int8 = (784 + 10) * 256 * 4, (784 + 10) * 256 + (256 + 10) * 4  # int8 values plus f32 scales
    assert out.startswith(f"quantize: 2 weight(s) to int8 per channel, {dense / 1024:,.1f} KiB -> "
                          f"{int8 / 1024:,.1f} KiB; largest relative error ")
    assert "the check compares with the model as written" in out and "MISMATCH" in out
    assert main(["compile", MLP, "-o", str(tmp_path), "--passes", "prune", "--freeze", "--pass-option", "sparsity=0.7",
                 "--pass-option", "structured=true", "--target", "jax", "--option", "matmul_precision=high"]) == 0
    assert ", 142,128 of 203,264 values zero (70%)" in capsys.readouterr().out  # 179 of 256 rows, 7 of 10
    assert (tmp_path / "mlp_jax.py").exists()


@pytest.mark.parametrize(("args", "error"), [
    (["--pass-option", "sparsty=0.5"], "error: unknown pass option 'sparsty'\nhint: did you mean 'sparsity'?"),
    (["--pass-option", "sparsity"], "error: --pass-option 'sparsity' should look like NAME=VALUE"),
    (["--pass-option", "sparsity=half"], "error: pass option 'sparsity' expects a float, got 'half'"),
    (["--option", "colour=red"], "error: unknown option 'colour' for target 'torch'"),
    (["--option", "compile=groups", "-O0"], "error: torch: compile='groups' compiles the fused groups"),
    (["--passes", "quantize"], "error: pass 'quantize' rewrites the weights, which are not frozen"),
])
def test_bad_options_exit_1_with_a_message(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", MLP, *args]) == 1
    assert capsys.readouterr().err.startswith(error)
