"""Device discovery: which frameworks are installed and which devices each one sees.

Each framework is probed in its own subprocess with a timeout, so a broken driver that crashes
or hangs on import is reported as a finding instead of taking shipei down with it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..ir.placement import TARGETS, Placement

# Each probe prints {"version": ..., "devices": [...]}; devices are "kind" or "kind:detail".
PROBES: dict[str, tuple[str, str]] = {
    "torch": ("torch", """
import json, torch
devices = [f"cuda:{torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
print(json.dumps({"version": torch.__version__, "devices": devices + ["cpu"]}))
"""),
    "jax": ("jax", """
import json, jax
devices = []
for backend in ("tpu", "gpu", "cpu"):
    try:
        devices += [backend if backend == "cpu" else f"{backend}:{d.device_kind}" for d in jax.devices(backend)]
    except RuntimeError:
        pass
print(json.dumps({"version": jax.__version__, "devices": devices}))
"""),
    "tf": ("tensorflow", """
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
devices = [d.device_type.lower() if d.device_type == "CPU" else f"{d.device_type.lower()}:{d.name}"
           for d in tf.config.list_physical_devices()]
print(json.dumps({"version": tf.__version__, "devices": devices}))
"""),
    "mindspore": ("mindspore", """
import json, mindspore
from mindspore import device_context
devices = [name for name in ("ascend", "gpu", "cpu") if getattr(device_context, name).is_available()]
print(json.dumps({"version": mindspore.__version__, "devices": devices}))
"""),
}


@dataclass
class FrameworkInfo:
    """What one probe found; `error` says why a framework is unusable."""

    target: str
    module: str
    installed: bool
    version: str | None = None
    devices: list[str] = field(default_factory=list)
    error: str | None = None


def probe(target: str, timeout: float = 60.0) -> FrameworkInfo:
    module, script = PROBES[target]
    info = FrameworkInfo(target, module, importlib.util.find_spec(module) is not None)
    if not info.installed:
        return info
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        info.error = f"probe timed out after {timeout:.0f} s"
        return info
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        info.error = f"probe failed (exit {result.returncode}): {lines[-1] if lines else 'no output'}"
        return info
    data = json.loads(result.stdout.strip().splitlines()[-1])
    info.version, info.devices = data["version"], data["devices"]
    return info


def discover(targets: list[str] | None = None, timeout: float = 60.0) -> list[FrameworkInfo]:
    """Probe frameworks in parallel (each in its own process)."""
    names = targets or list(PROBES)
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda t: probe(t, timeout), names))


#: How a probe names a device (its kind before any ':'), as a placement's device kind.
_KINDS = {"cpu": "cpu", "cuda": "cuda", "gpu": "cuda", "tpu": "tpu", "ascend": "ascend"}


@functools.cache
def available_placements() -> tuple[Placement, ...]:
    """Every (target, device) this machine can run, from the probes (cached for the process):
    each installed framework on each device it sees, accelerators first."""
    found = []
    for info in discover():
        if not info.installed or info.error:
            continue
        counts: dict[str, int] = {}
        for device in info.devices:
            kind = _KINDS.get(device.split(":")[0])
            if kind is None:
                continue
            index = counts[kind] = counts.get(kind, -1) + 1
            found.append(Placement(info.target, kind, index if kind != "cpu" else None))
    return tuple(sorted(found, key=lambda p: (p.device == "cpu", TARGETS.index(p.target), p.index or 0)))
