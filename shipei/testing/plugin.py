"""pytest plugin: a `lowering_check` fixture bound to the targets chosen on the command line.

    # test_my_model.py
    from hypothesis import given, settings
    from shipei.testing import graphs

    @settings(deadline=None)                  # a first compile takes seconds
    @given(g=graphs(max_nodes=6))             # by keyword: positional strategies fill the last arguments
    def test_random_models_lower_correctly(lowering_check, g):
        lowering_check(g)                     # every target in --shipei-targets

    def test_my_model(lowering_check):
        lowering_check("models/my_model.sp", targets=["jax"])

`pytest --shipei-targets torch,jax --shipei-device cpu` picks the targets and device (default:
every available target, on CPU); a requested target whose framework is missing skips the test.
Installed through the `pytest11` entry point `shipei`; without the installed entry point, load it
with `pytest -p shipei.testing.plugin`. The fixtures are session-scoped, so Hypothesis accepts
them in `@given` tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from .lowering import assert_lowering_correct, available_targets


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shipei", "shipei lowering checks")
    group.addoption("--shipei-targets", default=None, metavar="T1,T2",
                    help="targets lowering_check runs (default: every available one)")
    group.addoption("--shipei-device", default="cpu", help="device targets run on (default: cpu)")


def pytest_report_header(config: pytest.Config) -> str:
    return f"shipei targets: {', '.join(_targets(config)) or 'none available'}"


def _targets(config: pytest.Config) -> list[str]:
    option = config.getoption("--shipei-targets")
    return [t.strip() for t in option.split(",") if t.strip()] if option else available_targets()


@pytest.fixture(scope="session")
def shipei_targets(pytestconfig: pytest.Config) -> list[str]:
    """The targets chosen with --shipei-targets (default: every available one)."""
    return _targets(pytestconfig)


@pytest.fixture(scope="session")
def lowering_check(shipei_targets: list[str], pytestconfig: pytest.Config) -> Callable[..., None]:
    """`assert_lowering_correct` with the session's targets and device as defaults."""
    device = pytestconfig.getoption("--shipei-device")
    available = set(available_targets())

    def check(graph_or_source: Any, targets: Sequence[str] | None = None, **kwargs: Any) -> None:
        wanted = list(targets) if targets is not None else shipei_targets
        missing = [t for t in wanted if t not in available]
        if missing:
            pytest.skip(f"target(s) {', '.join(missing)} not available here")
        kwargs.setdefault("device", device)
        assert_lowering_correct(graph_or_source, targets=wanted, **kwargs)

    return check
