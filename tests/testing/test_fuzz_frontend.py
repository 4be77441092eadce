"""shipei fuzz --frontend: mutations, the verdict on one input, and a bounded run that must find
nothing (the long run is `shipei fuzz --frontend --time 600`)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from shipei.cli import main
from shipei.testing.fuzz_frontend import SEEDS, FrontendFuzzer, examine, inputs, mutate, unsafe_code


def test_the_seeds_compile_for_every_target() -> None:
    assert [examine(seed, "m.sp") for seed in SEEDS] == [("ok", "")] * len(SEEDS)


def test_a_seed_gives_the_same_inputs() -> None:
    assert list(itertools.islice(inputs(7), 50)) == list(itertools.islice(inputs(7), 50))
    assert list(itertools.islice(inputs(7), 50)) != list(itertools.islice(inputs(8), 50))
    rng = random.Random(0)
    assert len({mutate(SEEDS[0], rng) for _ in range(100)}) > 90


def test_the_verdict_on_one_input() -> None:
    kind, detail = examine("model M() { forward(x: f32[2]) -> f32[2] { return x + } }", "m.sp")
    assert kind == "located" and detail.startswith("m.sp:1:")
    assert examine("layer L() { }", "m.sp")[0] == "located"


def test_unsafe_code_is_told_from_safe() -> None:
    assert unsafe_code('"""a docstring with __import__("os")"""\nx = 1  # __import__\n') == ""
    assert unsafe_code('"""a docstring"""; __import__("os").system("true"); """"""\n').startswith(
        "user text as code at line 1")
    assert unsafe_code("class None(object): pass\n").startswith("not Python")


def test_a_bounded_run_finds_nothing(tmp_path: Path) -> None:
    summary = FrontendFuzzer(seconds=None, count=600, seed=11, workers=2, out=tmp_path, progress=None).run()
    assert summary.inputs == 600 and not summary.failed, summary.table()
    assert summary.counts["ok"] > 30 and summary.counts["located"] > 300  # both halves exercised
    assert (tmp_path / "frontend-summary.txt").read_text().startswith("inputs")


#: A program that elaborates for seconds (up to the size limit): past a short deadline, a hang.
SLOW = """layer Block(d: int) {
    fc = Linear(d, d)
    forward(x: f32[B, d]) -> f32[B, d] { return relu(fc(x)) }
}
model Big(n: int = 60000) {
    for i in range(n) { h[i] = Block(4) }
    forward(x: f32[B, 4]) -> f32[B, 4] { return x }
}
"""


def test_a_hang_is_counted_and_the_worker_replaced(tmp_path: Path) -> None:
    programs = [(SLOW, "slow.sp"), (SLOW, "slow.sp"), (SEEDS[0], "m.sp")]
    summary = FrontendFuzzer(seconds=None, timeout=1.0, workers=1, out=tmp_path, progress=None,
                             programs=programs).run()
    assert (summary.counts["hang"], summary.counts["ok"], summary.inputs) == (2, 1, 3) and summary.failed
    assert [f.kind for f in summary.findings] == ["hang"] and summary.findings[0].count == 2
    assert Path(summary.findings[0].path).with_suffix(".txt").read_text().startswith("compiled as")


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--frontend", "--time", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("inputs") and "no findings" in out
