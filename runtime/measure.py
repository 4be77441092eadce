"""What a process can measure about the model it runs: latency percentiles, host memory, device
memory through each framework's own counter, and energy where the hardware reports it.

Energy is a reading or nothing: NVML's energy counter on an NVIDIA GPU, RAPL's package counter on a
CPU where Linux exposes it to this user (it counts the whole package: every process on it). Where
neither is there, `energy_meter` says why, and no figure is made up in its place.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where Linux exposes RAPL's energy counters: one directory per CPU package (its sub-zones hold a colon more).
RAPL = "/sys/class/powercap/intel-rapl:[0-9]*"


def ready(values: Iterable[Any]) -> None:
    """Wait until `values` (a program's results) are computed: jax returns before it has; torch,
    TensorFlow and MindSpore on a CPU return when done."""
    for value in values:
        wait = getattr(value, "block_until_ready", None)
        if wait is not None:
            wait()


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `samples`, the nearest rank (a latency that was measured,
    as MLPerf reports it, never one interpolated between two)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """Start the peak (VmHWM) over from the resident size now (Linux 4.0+; elsewhere nothing)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_bytes() -> int | None:
    """This process's resident memory now, or None where /proc is not there."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def vm_bytes() -> int | None:
    """This process's address space now (what RLIMIT_AS bounds)."""
    kib = _status_kib("VmSize")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int | None:
    """The most resident memory this process had since it started or `reset_peak_rss`."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def _torch_peak(device: str, reset: bool) -> int:
    import torch

    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return int(torch.cuda.max_memory_allocated(device))


def _jax_peak(device: str, reset: bool) -> int:
    import jax

    stats = jax.devices(device)[0].memory_stats() or {}  # XLA keeps its peak for the process's life
    return int(stats.get("peak_bytes_in_use", 0))


def _tf_peak(device: str, reset: bool) -> int:
    import tensorflow as tf

    name = f"{device.upper()}:0"
    if reset:
        tf.config.experimental.reset_memory_stats(name)
    return int(tf.config.experimental.get_memory_info(name)["peak"])


def _mindspore_peak(device: str, reset: bool) -> int:
    import mindspore as ms

    if reset:
        ms.runtime.reset_max_memory_allocated()
    return int(ms.runtime.max_memory_allocated())


#: Each framework's own counter of the most device memory it held (None on the CPU: host RSS says it).
DEVICE_PEAK: dict[str, Callable[[str, bool], int]] = {
    "torch": _torch_peak, "jax": _jax_peak, "tf": _tf_peak, "mindspore": _mindspore_peak}


def device_peak_bytes(target: str, device: str, reset: bool = False) -> int | None:
    """The most memory `target`'s framework held on `device` (reset to now first with `reset`);
    None on the CPU, whose memory the host's RSS counts."""
    if device == "cpu":
        return None
    return DEVICE_PEAK[target](device, reset)


def _torch_free(device: str) -> int:
    import torch

    return int(torch.cuda.mem_get_info(device)[0])


def _jax_free(device: str) -> int | None:
    import jax

    stats = jax.devices(device)[0].memory_stats() or {}
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)) if "bytes_limit" in stats else None


#: The frameworks that say how much device memory is free (TensorFlow and MindSpore do not).
DEVICE_FREE: dict[str, Callable[[str], int | None]] = {"torch": _torch_free, "jax": _jax_free}


def device_free_bytes(target: str, device: str) -> int | None:
    """Memory free on `device` by `target`'s framework's own account, where it gives one; None on
    the CPU and where it does not."""
    if device == "cpu" or target not in DEVICE_FREE:
        return None
    return DEVICE_FREE[target](device)


@dataclass
class EnergyMeter:
    """A cumulative energy counter in joules, and what it measures."""

    source: str
    read: Callable[[], float]

    def joules(self, work: Callable[[], object]) -> float:
        """The joules the counter advanced while `work()` ran."""
        start = self.read()
        work()
        return self.read() - start


def energy_meter(device: str, index: int = 0) -> tuple[EnergyMeter | None, str]:
    """A meter for `device` (cuda: NVML; cpu: RAPL), or None and why there is none."""
    if device == "cuda":
        return _nvml(index)
    if device == "cpu":
        return _rapl()
    return None, f"no energy counter is read for {device} devices"


def _nvml(index: int) -> tuple[EnergyMeter | None, str]:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except ImportError:
        return None, "NVML's Python binding is not installed (pip install 'shipei[bench]')"
    except Exception as e:  # noqa: BLE001 - pynvml's errors name what NVML lacks (a library, a GPU, the counter)
        return None, f"NVML has no energy counter here: {e}"
    return EnergyMeter(f"NVML energy counter of GPU {index}",
                       lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3), ""  # mJ


def _rapl() -> tuple[EnergyMeter | None, str]:
    zones = sorted(Path(p) for p in glob.glob(RAPL) if ":" not in Path(p).name.split("intel-rapl:", 1)[1])
    if not zones:
        return None, "this CPU exposes no RAPL energy counter (/sys/class/powercap has none)"
    counters = []
    for zone in zones:
        try:
            span = int((zone / "max_energy_range_uj").read_text())
            int((zone / "energy_uj").read_text())
        except (OSError, ValueError) as e:
            return None, f"RAPL's counter is not readable by this user ({zone / 'energy_uj'}: {e.strerror or e})"
        counters.append((zone / "energy_uj", span))

    def read() -> float:
        return sum(int(path.read_text()) for path, _ in counters) / 1e6

    span = sum(s for _, s in counters) / 1e6
    return EnergyMeter(f"RAPL package counter ({len(zones)} package(s); every process on them counts)",
                       _wrapping(read, span)), ""


def _wrapping(read: Callable[[], float], span: float) -> Callable[[], float]:
    """A counter that counts on past the wrap-around of `read` (RAPL's wraps at `span` joules)."""
    state = {"last": read(), "total": 0.0}

    def total() -> float:
        now = read()
        state["total"] += now - state["last"] if now >= state["last"] else now + span - state["last"]
        state["last"] = now
        return state["total"]

    return total
