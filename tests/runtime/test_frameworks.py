"""A framework whose import fails or hangs is named, with the cause, and never hangs shipei.

A broken installation is simulated for real: a `mindspore` package on PYTHONPATH, ahead of the
installed one, whose import raises or sleeps forever; the command line runs in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shipei.codegen.frameworks import DEFAULT_TIMEOUT, TIMEOUT_VARIABLE, import_timeout
from shipei.ir.errors import ShipeiError

MLP = str(Path(__file__).resolve().parents[2] / "examples" / "mlp.sp")
BROKEN = {
    "raises": "raise ImportError('libmindspore_core.so: cannot open shared object file')\n",
    "says why": "import os\nos.write(2, b'E0000 loader.cc:12] libascend_hal.so not found\\n')\n"
                "raise ImportError('no device library')\n",
    "hangs": "import time\ntime.sleep(3600)\n",
}


def _shadow(tmp_path: Path, how: str) -> dict[str, str]:
    """The environment of a process whose `import mindspore` finds the broken package."""
    package = tmp_path / "mindspore"
    package.mkdir()
    (package / "__init__.py").write_text(BROKEN[how])
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, TIMEOUT_VARIABLE: "3"}


def _run(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    return result, time.monotonic() - start


def test_an_import_that_raises_names_the_framework_and_the_cause(tmp_path: Path) -> None:
    result, _ = _run(["-m", "shipei", "run", MLP, "--target", "mindspore"], _shadow(tmp_path, "raises"))
    assert result.returncode == 1, result.stderr
    assert result.stderr == ("error: importing mindspore for target 'mindspore' failed: ImportError: "
                             "libmindspore_core.so: cannot open shared object file\n"
                             "hint: reinstall it: pip install --force-reinstall 'shipei[mindspore]'\n")


def test_what_a_failing_import_wrote_is_part_of_its_error(tmp_path: Path) -> None:
    """A framework's start-up output is kept out of the way (see the next test) but not lost: a
    native library that says why it fails is quoted in the error."""
    result, _ = _run(["-m", "shipei", "run", MLP, "--target", "mindspore"], _shadow(tmp_path, "says why"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: importing mindspore for target 'mindspore' failed: ImportError: no "
                                    "device library\nE0000 loader.cc:12] libascend_hal.so not found\n")


def test_frameworks_start_up_logging_is_quiet_unless_verbose() -> None:
    """TensorFlow writes nine lines of oneDNN, CPU-feature, absl and XLA notices on its way up; the
    command line shows only its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SHIPEI_VERBOSE")}
    quiet, _ = _run(["-m", "shipei", "run", MLP, "--target", "tf"], env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == ["warning: no accelerator found for target 'tf'; running on CPU"]
    verbose, _ = _run(["-m", "shipei", "--verbose", "run", MLP, "--target", "tf"], env)
    assert verbose.returncode == 0 and len(verbose.stderr.splitlines()) > 1


def test_an_import_that_hangs_times_out(tmp_path: Path) -> None:
    result, seconds = _run(["-m", "shipei", "run", MLP, "--target", "mindspore"], _shadow(tmp_path, "hangs"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: importing mindspore for target 'mindspore' did not finish within 3 s\n")
    assert f"set {TIMEOUT_VARIABLE} to wait longer" in result.stderr
    assert seconds < 60, f"took {seconds:.0f} s"


def test_after_a_timeout_the_framework_is_not_waited_for_again(tmp_path: Path) -> None:
    """The hung import holds its module's lock for good: a second load fails at once."""
    script = f"""
import time, shipei
for _ in range(2):
    start = time.monotonic()
    try:
        shipei.compile({MLP!r}, "mindspore").load()
    except shipei.ShipeiError as e:
        print(round(time.monotonic() - start, 1), e.message)
"""
    result, _ = _run(["-c", script], _shadow(tmp_path, "hangs"))
    first, second = (line.split(" ", 1) for line in result.stdout.splitlines())
    message = "importing mindspore for target 'mindspore' did not finish within 3 s"
    assert first[1] == second[1] == message, result.stdout + result.stderr
    assert float(first[0]) >= 3 and float(second[0]) < 1


def test_the_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIMEOUT_VARIABLE, raising=False)
    assert import_timeout() == DEFAULT_TIMEOUT
    monkeypatch.setenv(TIMEOUT_VARIABLE, "2.5")
    assert import_timeout() == 2.5
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(TIMEOUT_VARIABLE, bad)
        with pytest.raises(ShipeiError, match=f"{TIMEOUT_VARIABLE}='{bad}' is not a positive number of seconds"):
            import_timeout()
