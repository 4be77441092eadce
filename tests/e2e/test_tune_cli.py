"""`shipei tune` as a user runs it: the largest batch under a memory limit, proven by running the
program again at that batch and the next one tried, each in a fresh process under the limit, and
measured outside shipei; and clear errors for what cannot be tuned."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shipei import ShipeiError, api
from shipei.cli import main
from shipei.measuring import WARM_MODEL, BenchWorker, Entry, thread_env
from shipei.tune import STEADY_MALLOC, parse_size

pytestmark = pytest.mark.xdist_group("bench")  # trials take turns with bench's timings
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP = str(EXAMPLES / "mlp.sp")

#: The MLP's generated torch program at a batch, loaded without shipei after torch has run once: the
#: most memory above that point over five calls after a first, as `tune` counts a model's memory.
PEAK = """
import importlib.util, sys
from pathlib import Path
import numpy as np

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def generated(directory):
    spec = importlib.util.spec_from_file_location(directory.name, next(directory.glob("*_torch.py")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

directory, batch, warm = Path(sys.argv[1]), int(sys.argv[2]), generated(Path(sys.argv[3]))
warm_model = warm.load(str(next(Path(sys.argv[3]).glob("*.safetensors"))), "cpu")
for _ in range(2):  # as tune's workers warm torch up: its oneDNN graph machinery is the framework's
    warm.run(warm_model, [np.ones((1, 1), np.float32)], "cpu")
module = generated(directory)
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
model = module.load(str(next(directory.glob("*.safetensors"))), "cpu")
x = np.random.default_rng(0).standard_normal((batch, 784)).astype(np.float32)
module.run(model, [x], "cpu")
open("/proc/self/clear_refs", "w").write("5")
for _ in range(5):
    module.run(model, [x], "cpu")
print(status("VmHWM") - base)
"""


def _peak(directory: Path, batch: int, warm: Path) -> int:
    result = subprocess.run([sys.executable, "-c", PEAK, str(directory), str(batch), str(warm)], capture_output=True,
                            text=True, env={**os.environ, **STEADY_MALLOC}, timeout=300)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def _trial(tmp_path: Path, directory: Path, batch: int, limit: int) -> dict:
    worker = BenchWorker({**thread_env(None), **STEADY_MALLOC}, tmp_path / f"again-{batch}.log")
    try:
        loaded = worker.request("load", 300, entry=Entry("torch", directory, 0.0, "torch"))
        assert "error" not in loaded, loaded
        return worker.request("trial", 300, dims={"B": batch}, seed=0, limit=limit, calls=5)
    finally:
        worker.stop()


def test_the_chosen_batch_runs_under_the_limit_and_the_next_one_up_does_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "tune.json"
    assert main(["tune", MLP, "--target", "torch", "--memory-limit", "64MiB", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "memory limit 64.0 MiB (given), budget 57.6 MiB after a 10% margin" in out
    tuned = json.loads(report.read_text())
    chosen = tuned["largest"]
    above = min(t["batch"] for t in tuned["trials"] if t["batch"] > chosen)
    assert re.search(rf"^largest batch that fits: B={chosen}, measured [\d.]+ MiB against an estimate of "
                     rf"[\d.]+ MiB \([\d.]+x\)$", out, re.M)
    assert re.search(rf"^  B={above} does not fit: ", out, re.M)
    assert above - chosen <= max(1, chosen // 16)  # bisected until a sixteenth apart
    # the proof: the program run again at those batches, each in a fresh process with the limit enforced
    budget, limit = tuned["budget"], 64 * 2**20
    trials = {t["batch"]: t for t in tuned["trials"]}
    assert trials[above]["error"] or trials[above]["peak"] > budget
    # and twice the next one up, well past the limit (by more than a process's pages vary by): which
    # batches tune tries depends on its estimate, and a trial may fail rather than measure
    over = 2 * above
    compiled = api.compile(MLP, "torch")
    directory = compiled.save(tmp_path / "program").parent
    again = {batch: _trial(tmp_path, directory, batch, limit) for batch in (chosen, above, over)}
    # a run's peak varies by a few hundred KB from process to process (six fresh processes at B=10752:
    # 60.36-60.67 MB), which is what the margin is for: the chosen batch runs under the limit. tune bisects
    # to the budget's edge, so the next one up can land either side of the budget in another process (one
    # CI run: 60.12 MB against 60.40): what holds is that each run measures what tune measured
    assert "error" not in again[chosen] and again[chosen]["peak"] <= limit
    for batch in (chosen, above):
        if not trials[batch]["error"]:
            assert "error" in again[batch] or again[batch]["peak"] == pytest.approx(trials[batch]["peak"], rel=0.02)
    assert "error" in again[over] or again[over]["peak"] > limit
    # and measured outside shipei, the generated program itself agrees with what tune counted
    mine = trials[chosen]["peak"]
    warm = api.compile(WARM_MODEL, "torch", passes=[]).save(tmp_path / "warm").parent
    outside = _peak(directory, chosen, warm)
    assert outside == pytest.approx(mine, rel=0.05) and outside <= limit
    fastest = max((t for t in tuned["trials"] if t["peak"] is not None and t["peak"] <= budget and not t["error"]),
                  key=lambda t: t["throughput"])
    assert tuned["fastest"] == fastest["batch"] and f"most throughput: B={fastest['batch']}, " in out


def test_tune_train_finds_the_largest_training_batch_and_counts_what_a_step_holds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    digits = str(EXAMPLES / "digits_mlp.sp")
    report = tmp_path / "train.json"
    assert main(["tune", digits, "--train", "--target", "torch", "--memory-limit", "64MiB", "--json",
                 str(report)]) == 0
    out = capsys.readouterr().out
    assert "DigitsMLP training (adamw) on torch (cpu): memory limit 64.0 MiB (given)" in out
    tuned = json.loads(report.read_text())
    chosen = tuned["largest"]
    assert re.search(rf"^training memory at B={chosen}: weights .* \+ gradients .* \+ optimizer state .* "
                     r"\+ kept activations .* = [\d.]+ MiB$", out, re.M)
    trials = {t["batch"]: t for t in tuned["trials"]}
    above = min(b for b in trials if b > chosen)
    assert trials[chosen]["peak"] <= tuned["budget"] and not trials[chosen]["error"]
    assert trials[above]["error"] or trials[above]["peak"] > tuned["budget"]
    # a step holds its activations for the backward pass: the same limit fits a smaller batch than a
    # forward call's, whose trials the estimate of the inference program says would fit up to here
    forward = api.compile(str(EXAMPLES / "digits_mlp.sp"), "torch").estimate_memory(B=chosen)
    assert forward.total_bytes < trials[chosen]["estimate"]
    # and the step's measured memory grows with the batch as the estimate says it will
    big = max(trials, key=lambda b: b if not trials[b]["error"] else 0)
    small = min(b for b in trials if b > 1)
    assert (trials[big]["peak"] - trials[small]["peak"]) == pytest.approx(
        trials[big]["estimate"] - trials[small]["estimate"], rel=0.25)


@pytest.mark.parametrize(("args", "message"), [
    ([MLP, "--memory-limit", "1MiB"], "a memory limit of 1.0 MiB .* is too small for B=1"),
    ([MLP, "--memory-limit", "4 XB"], "'4 XB' is not a memory size"),
    ([MLP, "--memory-limit", "0"], "must be more than 0 bytes"),
    ([MLP, "--dim", "B=4"], "B is the batch size tune searches"),
    ([MLP, "--margin", "1.5"], "--margin must be at least 0 and less than 1"),
    ([str(EXAMPLES / "transformer.sp")], "give every shape symbol a value: T has none"),
    ([MLP, "--train"], "mlp.sp:2:7: error: model MLP has no loss method, so it cannot be trained"),
])
def test_tune_bad_input_is_a_clear_error(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", *args, "--target", "torch"]) == 1
    assert re.search(message, capsys.readouterr().err)


def test_a_broken_framework_is_named(tmp_path: Path) -> None:
    package = tmp_path / "mindspore"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('libmindspore_core.so: cannot open shared object')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "shipei", "tune", MLP, "--target", "mindspore", "--memory-limit",
                             "1GiB"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "mindspore" in result.stderr and "libmindspore_core.so" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("text", "size"), [("4GiB", 4 * 2**30), ("512 MiB", 512 * 2**20), ("1.5GB", 1_500_000_000),
                                            ("1000", 1000)])
def test_memory_sizes_read_as_people_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "error"), [("9" * 400, "more memory than any machine has"),
                                             ("9" * 400 + "GiB", "more memory than any machine has"),
                                             ("0GiB", "must be more than 0 bytes"),
                                             ("4 parsecs", "is not a memory size")])
def test_a_memory_size_no_machine_has_is_a_clear_error(text: str, error: str) -> None:
    with pytest.raises(ShipeiError, match=error):
        parse_size(text)
