"""Device discovery: real frameworks report versions and devices; a broken one is a finding."""

from __future__ import annotations

import pytest
from shipei.runtime import devices

from shipei.cli import main


def test_every_installed_framework_reports_a_version_and_cpu() -> None:
    for info in devices.discover():
        assert info.installed, info
        assert info.error is None and info.version
        assert "cpu" in info.devices


def test_a_hanging_probe_times_out_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(devices.PROBES, "torch", ("torch", "import time; time.sleep(30)"))
    info = devices.probe("torch", timeout=1.0)
    assert info.installed and info.error == "probe timed out after 1 s"


def test_a_crashing_probe_is_reported_with_its_last_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(devices.PROBES, "jax", ("jax", "raise RuntimeError('driver exploded')"))
    info = devices.probe("jax")
    assert info.error.startswith("probe failed (exit 1): RuntimeError: driver exploded")


def test_a_missing_framework_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(devices.PROBES, "mindspore", ("no_such_framework_xyz", "print('unreachable')"))
    monkeypatch.setattr(devices, "discover", lambda timeout=60.0: [devices.probe("mindspore")])
    assert main(["devices"]) == 0
    assert "not installed: pip install 'shipei[mindspore]'" in capsys.readouterr().out
