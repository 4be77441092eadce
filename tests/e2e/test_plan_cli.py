"""`shipei plan` as a user runs it: a table of stages for this machine or a cluster file, a JSON
plan whose device map `run` executes as the same stages, predictions printed next to
measurements, and clear errors for what cannot be planned."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shipei.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRANSFORMER = str(EXAMPLES / "transformer.sp")


def test_plan_for_this_machine_runs_as_planned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.json"
    assert main(["plan", TRANSFORMER, "--dim", "B=8", "--dim", "T=16", "--micro-batches", "4", "--json",
                 str(plan)]) == 0
    out = capsys.readouterr().out
    assert "micro-batches at B=2, T=16" in out and "| stage | layers | machine | placement |" in out
    assert re.search(r"bubble \d+%; [\d,.]+ samples/s", out)
    written = json.loads(plan.read_text())
    placements = [s["placement"] for s in written["stages"]]
    assert all(re.fullmatch(r"torch:cpu:\d", p) for p in placements) and len(set(placements)) == len(placements)
    # the plan's device map is what run executes: the same stages, in the same places
    assert main(["run", TRANSFORMER, "--dim", "B=8", "--dim", "T=16", "--device-map", f"@{plan}",
                 "--micro-batches", "4", "--check"]) == 0
    ran = capsys.readouterr().out
    assert f"GPT in {len(placements)} stages: " + ", ".join(f"{p} (cpu)" for p in placements) in ran
    assert "MISMATCH" not in ran


def test_plan_measure_prints_each_prediction_next_to_its_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", TRANSFORMER, "--dim", "B=8", "--dim", "T=16", "--micro-batches", "4", "--measure"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (\d+|batch, pipelined) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert [r[0] for r in rows][-1] == "batch, pipelined" and len(rows) >= 2
    for _, predicted, measured, ratio in rows:
        assert float(predicted) > 0 and float(measured) > 0
        assert float(ratio) == pytest.approx(float(measured) / float(predicted), rel=0.02, abs=0.006)
    assert re.search(r"every stage's prediction within 25% of its measurement: (yes|no)", out)


def test_plan_for_a_cluster_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text('[links]\nintra = 900\ninter = 25\n[[machines]]\ndevices = { gpu = 2 }\ncount = 2\n'
                       '[[machines]]\ndevices = { npu = 4 }\n')
    assert main(["plan", TRANSFORMER, "--cluster", str(cluster), "--dim", "B=64", "--dim", "T=64"]) == 0
    out = capsys.readouterr().out
    assert "on " + str(cluster) + ": " in out and "of 8 devices" in out
    assert re.search(r"\| 0 \| \S.* \| m0-0 \| torch:cuda:0 \|", out)  # the fastest kind first


@pytest.mark.parametrize("args, error", [
    (["--micro-batches", "0"], "error: --micro-batches must be at least 1, got 0"),
    (["--dim", "B=2", "--micro-batches", "4"], "error: a batch of B=2 cannot be cut into 4 micro-batches"),
    (["--cluster", "/nonexistent/c.toml"], "error: cannot read the cluster description /nonexistent/c.toml"),
])
def test_what_cannot_be_planned_is_a_clear_error(args: list[str], error: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", TRANSFORMER, *args]) == 1
    assert capsys.readouterr().err.startswith(error)
