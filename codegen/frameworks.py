"""Importing a target's framework without letting a broken installation take shipei down.

A framework whose import raises (a missing shared library, an ABI mismatch) or never returns (a
driver that blocks on a device) is reported by name, with the cause, instead of as an internal
error or a hang. The import runs in a daemon thread so that a hung one can be abandoned; it
holds its module's import lock forever, so a timed-out framework is not tried again in this
process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from ..ir.errors import ShipeiError
from . import TARGETS, get_target

#: Seconds an import may take before it counts as hung; mindspore, the slowest here, takes ~1 s.
DEFAULT_TIMEOUT = 120.0
TIMEOUT_VARIABLE = "SHIPEI_IMPORT_TIMEOUT"
#: Set, frameworks' own start-up logging is shown (`shipei --verbose`).
VERBOSE_VARIABLE = "SHIPEI_VERBOSE"

_failed: dict[str, ShipeiError] = {}  # framework -> why it cannot be imported in this process


def import_timeout() -> float:
    """Seconds from $SHIPEI_IMPORT_TIMEOUT, else `DEFAULT_TIMEOUT`."""
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ShipeiError(f"{TIMEOUT_VARIABLE}={text!r} is not a positive number of seconds")
    return seconds


def require_framework(target: str, timeout: float | None = None) -> ModuleType:
    """`target`'s framework, imported, or a `ShipeiError` naming it and why it is unusable: not
    installed (with the extra to install), its import raised, or it did not finish within
    `timeout` seconds (default `import_timeout()`). The torch and MindSpore generators ask theirs
    which names a layer may take; the runtime imports it before a generated module."""
    from . import get_target

    t = get_target(target)
    return require_package(t.framework, t.extra, f"target '{target}'", timeout)


def require_package(name: str, extra: str, user: str, timeout: float | None = None) -> ModuleType:
    """Package `name` (installed by shipei's extra `extra`), imported for `user` (`target 'jax'`,
    `--ray`), with the same errors and timeout as `require_framework`."""
    if importlib.util.find_spec(name) is None:
        raise ShipeiError(f"{user} needs {name}, which is not installed", hint=f"pip install 'shipei[{extra}]'")
    return _import(name, extra, user, timeout)


def _import(name: str, extra: str, user: str, timeout: float | None) -> ModuleType:
    if name in _failed:
        raise _failed[name]
    if name in sys.modules:
        return sys.modules[name]
    limit = import_timeout() if timeout is None else timeout
    raised: list[BaseException] = []

    def run() -> None:
        try:
            importlib.import_module(name)
        except BaseException as e:  # noqa: BLE001 - whatever it is, it is reported to the caller
            raised.append(e)

    thread = threading.Thread(target=run, name=f"shipei-import-{name}", daemon=True)
    with _start_up_log() as log:
        thread.start()
        thread.join(limit)
    if thread.is_alive():
        _failed[name] = ShipeiError(
            f"importing {name} for {user} did not finish within {limit:g} s",
            hint=f"its installation or a device driver may be broken (`shipei devices` probes each framework "
                 f"apart); set {TIMEOUT_VARIABLE} to wait longer")
        raise _failed[name]
    if raised:
        e = raised[0]
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        said = "".join(log).strip()
        raise ShipeiError(f"importing {name} for {user} failed: {type(e).__name__}"
                          + (f": {first}" if first else "") + (f"\n{said}" if said else ""),
                          hint=f"reinstall it: pip install --force-reinstall 'shipei[{extra}]'") from None
    return sys.modules[name]


@contextmanager
def _start_up_log() -> Iterator[list[str]]:
    """What a framework's native code writes to stderr while it imports, kept from the terminal and
    given as the list's text after the block: nine lines of TensorFlow's oneDNN, CPU-feature and
    absl notices, which no setting turns off (they are written before its logging reads one). An
    import that fails shows it; with $SHIPEI_VERBOSE set (`shipei --verbose`) it goes to stderr."""
    said: list[str] = []
    if os.environ.get(VERBOSE_VARIABLE):
        yield said
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            said.append(log.read().decode(errors="replace"))


def available_targets() -> list[str]:
    """Targets whose code generator exists and whose framework is installed (not imported)."""
    out = []
    for name in TARGETS:
        try:
            target = get_target(name)
        except ImportError:
            continue
        if importlib.util.find_spec(target.framework) is not None:
            out.append(name)
    return out
