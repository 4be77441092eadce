"""Golden files: the three examples' generated programs per target, as a reviewer reads them.

A change to code generation shows as a diff of `tests/golden/` (`<example>_<target>.py.golden`:
not Python files of the project, so tools that read the project's code leave them alone);
regenerate them with `SHIPEI_UPDATE_GOLDEN=1 pytest tests/codegen/test_golden.py` and read the diff
before committing. The programs are run against the reference by the examples' own tests; here
they must match, and pass the project's linter: line length, import order, nothing unused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from shipei.codegen import TARGETS
from shipei.codegen.wrap import LIMIT

import shipei

ROOT = Path(__file__).parents[2]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLES = ("mlp", "cnn", "transformer")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("example", EXAMPLES)
def test_generated_program_matches_its_golden_file(example: str, target: str, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the header names the source as the command line would: examples/x.sp
    source = shipei.compile(f"examples/{example}.sp", target).source
    golden = GOLDEN / f"{example}_{target}.py.golden"
    if os.environ.get("SHIPEI_UPDATE_GOLDEN"):
        golden.write_text(source)
    assert source == golden.read_text(), f"{golden.name} differs: regenerate (SHIPEI_UPDATE_GOLDEN=1), read the diff"
    # E702: dead values are freed as torch.fx writes it, `y = f(x);  del x`
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--ignore", "E702", "--line-length", str(LIMIT),
                           "--stdin-filename", f"{example}_{target}.py", "-"], input=source, capture_output=True,
                          text=True, cwd=ROOT)
    assert lint.returncode == 0, lint.stdout
