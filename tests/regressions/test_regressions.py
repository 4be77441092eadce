"""Findings of `shipei fuzz`, kept: each `TARGET-OP-what.sp` with its inputs `.npz` (by input name),
as the fuzzer saved them, must now lower correctly on TARGET; a name ending `-ON` is a finding of
`shipei fuzz -O N`, checked at that level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shipei.frontend import elaborate_file

from shipei.testing import assert_lowering_correct

HERE = Path(__file__).resolve().parent
CASES = sorted(HERE.glob("*.sp"))


def test_there_are_regressions() -> None:
    assert CASES


@pytest.mark.parametrize("program", CASES, ids=lambda p: p.stem)
def test_a_fuzzer_finding_stays_fixed(program: Path) -> None:
    graph = elaborate_file(program)
    arrays = np.load(program.with_suffix(".npz"))
    inputs = [arrays[v.name] for v in graph.inputs]
    level = program.stem.rpartition("-O")[2]
    assert_lowering_correct(graph, targets=[program.stem.split("-")[0]], inputs=inputs,
                            opt=int(level) if level.isdigit() else 0)
