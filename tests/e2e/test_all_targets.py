"""The three examples on all four targets: each equals the reference, the same weights give the
same outputs everywhere, every generated program runs as a script, and the CLI drives each."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from shipei.codegen import TARGETS
from shipei.ir.inputs import random_inputs
from shipei.ir.tolerance import compare

import shipei
from shipei.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DIMS = {"B": 2, "T": 8}


def _outputs(example: str, target: str) -> tuple[list, list, shipei.Compiled]:
    compiled = shipei.compile(EXAMPLES / example, target, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exe = compiled.load(device="cpu")
    x = random_inputs(compiled.ir, seed=3, dims=DIMS)
    return exe.run(*x), shipei.reference(compiled.ir, x, compiled.weights), compiled


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("example", ["mlp.sp", "cnn.sp", "transformer.sp"])
def test_example_matches_reference_on_every_target(example: str, target: str) -> None:
    got, want, compiled = _outputs(example, target)
    for value, g, w in zip(compiled.ir.outputs, got, want, strict=True):
        assert g.shape == w.shape
        worst = compare(g, w, value.dtype)
        assert worst.ok, f"{example} on {target}: {worst}"


@pytest.mark.parametrize("example", ["mlp.sp", "cnn.sp", "transformer.sp"])
def test_same_weights_give_the_same_outputs_on_all_targets(example: str) -> None:
    results = {t: _outputs(example, t)[0][0] for t in TARGETS}
    first = results[TARGETS[0]]
    for target, out in results.items():
        assert compare(out, first, shipei.parse(EXAMPLES / example).outputs[0].dtype).ok, target


@pytest.mark.parametrize("target", TARGETS)
def test_generated_program_runs_as_a_script(target: str, tmp_path: Path) -> None:
    path = shipei.compile(EXAMPLES / "mlp.sp", target).save(tmp_path)
    result = subprocess.run([sys.executable, "-I", str(path)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(2, 10) float32" in result.stdout and "device: cpu" in result.stdout


def test_compile_all_targets_writes_four_programs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compile", str(EXAMPLES / "cnn.sp"), "--target", "all", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.py")) == sorted(f"resnet_{t}.py" for t in TARGETS)
    for target in TARGETS:
        assert shipei.load(tmp_path, target, device="cpu").device == "cpu"


@pytest.mark.parametrize("target", TARGETS)
def test_cli_run_check_on_every_target(target: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(EXAMPLES / "mlp.sp"), "--target", target, "--check"]) == 0
    out = capsys.readouterr().out
    assert f"MLP on {target} (cpu)" in out and " ok" in out
