"""The worker process that `shipei bench`, `bench --profile` and `shipei tune` measure in: one per
target (or per trial), started as `python -m shipei.measuring`, driven over a pipe
(`runtime.workers`), each request a method of `_Served`.

A worker loads the program after importing its framework and warming it up on a one-op program
(`WARM_MODEL`),
so that what a framework sets up once (thread pools, kernel libraries, memory pools) is counted as
the framework's, not the model's: the model's memory is the peak resident set above that point.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import api
from .ir.errors import ShipeiError
from .ir.inputs import random_inputs
from .runtime.distributed import RayOptions
from .runtime.workers import SCRATCH_ENV, receive, replies_stream, send

#: How far a trial's address space may run ahead of the memory it holds: glibc reserves 64 MiB of it
#: for each thread's malloc arena, and each new thread's stack takes more (torch's MLP at B=10240
#: failed at 56 MiB resident under a 96 MiB cap on its address space). The cap stops a runaway
#: allocation before the machine runs out; whether a batch fits is decided on resident memory.
ADDRESS_SLACK = 256 * 2**20
T = TypeVar("T")
#: A one-op program: what measures a call's fixed cost.
CALL_MODEL = "model Call() { forward(x: f32[1]) -> f32[1] { return -x } }"
#: What warms a framework up before the baseline, called twice: a product, which the torch program
#: runs as a oneDNN graph, so TorchScript and oneDNN Graph set themselves up (17 MB here) before
#: the baseline rather than in the model's count.
WARM_MODEL = """model Warm() {
    param w: f32[1, 1] = uniform(low=-1.0, high=1.0)
    forward(x: f32[1, 1]) -> f32[1, 1] { return x @ w }
}"""

#: Seconds a worker may take to answer one request (importing a framework and loading a program
#: included); past it, it is stopped and its request answered with an error.
REQUEST_TIMEOUT = 600.0
#: Frameworks' own start-up logging, quieted in the workers.
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_v": "3", "PYTHONWARNINGS": "ignore"}


def worker_cores(threads: int, target: str | None) -> int:
    """The cores a worker running `target` on `threads` threads is pinned to: as many, but one more
    for MindSpore, whose runtime hands every graph launch between the Python thread and an actor
    thread, both spinning while they wait, so on `threads` cores each hand-off waits out a
    scheduler time slice (the digits MLP's train step took 16 ms pinned to one core, 1.3 ms on two)."""
    return threads + (target == "mindspore")


def thread_env(threads: int | None, target: str | None = None) -> dict[str, str]:
    """Environment that holds every framework to `threads` intra-op threads (None: their defaults),
    for a worker that runs `target` (None: any), on `worker_cores` cores."""
    if threads is None:
        return dict(QUIET)
    n = str(threads)
    return {**QUIET, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "TF_NUM_INTRAOP_THREADS": n,
            "TF_NUM_INTEROP_THREADS": "1", "SHIPEI_BENCH_THREADS": n,
            "SHIPEI_BENCH_CORES": str(worker_cores(threads, target)),
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                         f"intra_op_parallelism_threads={n}"}


@dataclass(frozen=True)
class Entry:
    """One thing to measure: a target's program (or a pipeline's driver) saved in `directory`."""

    name: str
    directory: Path
    compile_s: float
    target: str | None = None  # None: a partitioned model
    device: str = "auto"
    micro_batches: int = 1
    ray: RayOptions | None = None


def in_turn(items: Sequence[T], k: int) -> list[T]:
    """`items` in round `k`'s order: rotated by k, so that each takes every place in turn and drift
    in the machine's load meets all of them alike."""
    k %= max(1, len(items))
    return [*items[k:], *items[:k]]


class _Served:
    """In a worker: the loaded program and, once inputs came, its prepared call."""

    def __init__(self) -> None:
        self.exe: Any = None
        self.call: Callable[[], Any] | None = None
        self.target: str | None = None
        self.on_ray = False
        self.rss_after_import: int | None = None
        self.vm_after_import: int | None = None
        self.meter: Any = None
        self.energy_note = ""
        self.natives: list[tuple[Callable[[], Any] | None, bool]] = []
        self.trainer: Any = None

    def _warm(self, targets: list[str]) -> None:
        """Import and warm up the frameworks, then take the baseline the model's memory is counted from."""
        from .codegen.frameworks import require_framework
        from .runtime.measure import reset_peak_rss, rss_bytes, vm_bytes

        for target in targets:
            require_framework(target)
        threads = os.environ.get("SHIPEI_BENCH_THREADS")
        if threads and "torch" in targets:
            import torch

            torch.set_num_threads(int(threads))
        if threads and "mindspore" in targets:
            import mindspore

            mindspore.set_context(runtime_num_threads=int(threads))
        for target in targets:  # the framework's own set-up, before the baseline
            warm = api.compile(api.parse(WARM_MODEL), target, passes=[]).load("auto")
            for _ in range(2):
                warm.run(np.ones((1, 1), np.float32))
        reset_peak_rss()
        self.rss_after_import, self.vm_after_import = rss_bytes(), vm_bytes()

    def load(self, entry: Entry) -> dict[str, Any]:
        from .runtime.measure import energy_meter

        self.target, self.on_ray = entry.target, entry.ray is not None
        self._warm([entry.target] if entry.target else _pipeline_targets(entry.directory))
        start = time.perf_counter()
        self.exe = api.load(entry.directory, entry.target or "torch", entry.device, ray=entry.ray)
        if entry.target:
            device = self.exe.device
            kind, _, index = device.partition(":")
            self.meter, self.energy_note = energy_meter(kind, int(index or 0))
        else:  # the host's counter: the stages' devices each have their own, which a sum would need
            device = " + ".join(self.exe.placements)
            self.meter, self.energy_note = energy_meter("cpu")
        return {"load_s": time.perf_counter() - start, "device": device,
                "energy_note": self.energy_note or self.meter.source}

    def load_trainer(self, source: str, target: str, model: str | None, optimizer: str, seed: int,
                     params: dict[str, Any], device: str) -> dict[str, Any]:
        """A `Trainer` of `source`'s loss on `target` and `device`, built after the baseline, so that
        its weights, gradients and optimizer state count as the model's: what `trial` then steps."""
        from .training import Trainer

        self.target = target
        self._warm([target])
        start = time.perf_counter()
        self.trainer = Trainer(Path(source), target, optimizer=optimizer, seed=seed, model=model, device=device,
                               **params)
        return {"load_s": time.perf_counter() - start, "device": self.trainer.device}

    def prepare(self, inputs: list[np.ndarray], micro_batches: int) -> dict[str, Any]:
        from .runtime.measure import device_peak_bytes, reset_peak_rss

        reset_peak_rss()
        if self.target is not None:
            device_peak_bytes(self.target, self.exe.device, reset=True)
            self.call = self.exe.prepared(*inputs)
        else:
            self.call = lambda: self.exe.run(*inputs, micro_batches=micro_batches)
        start = time.perf_counter()
        self.call()
        return {"first_call_s": time.perf_counter() - start}

    def sample(self, calls: int) -> dict[str, Any]:
        call, seconds = self.call, []

        def block() -> None:
            for _ in range(calls):
                start = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - start)

        if self.meter is None:
            block()
            return {"seconds": seconds, "joules": None}
        return {"seconds": seconds, "joules": self.meter.joules(block)}

    def programs(self, programs: list[tuple[Path, str, str, list[np.ndarray], str]]) -> dict[str, Any]:
        """Load each (directory, target, device, inputs, how) program and prepare its call, run once:
        native (`Executable.native`) in passes over them all; or `alone`, native again and again;
        or `numpy`, numpy in and out (`Executable.prepared`) again and again. Per program, why it
        could not be loaded ("" when it could)."""
        from .codegen.frameworks import require_framework

        self.natives, errors = [], []
        for directory, target, device, inputs, how in programs:
            try:
                require_framework(target)
                exe = api.load(directory, target, device)
                native = exe.prepared(*inputs) if how == "numpy" else exe.native(*inputs)
                native()
            except Exception as e:  # noqa: BLE001 - a program that fails is reported, the others timed
                native, error = None, f"{type(e).__name__}: {e}"
            else:
                error = ""
            self.natives.append((native, how != "passes"))
            errors.append(error)
        return {"errors": errors}

    def time(self, passes: int) -> dict[str, Any]:
        """Each prepared program's median seconds over `passes` passes, a pass calling each once in
        order, as a program runs its parts (what one leaves in the caches is what the next finds);
        a program timed alone is called `passes` times in a row instead."""
        seconds: list[list[float]] = [[] for _ in self.natives]

        def timed(native: Callable[[], Any], into: list[float]) -> None:
            start = time.perf_counter()
            native()
            into.append(time.perf_counter() - start)

        for (native, alone), mine in zip(self.natives, seconds):
            for _ in range(passes if alone and native is not None else 0):
                timed(native, mine)
        for _ in range(passes):
            for (native, alone), mine in zip(self.natives, seconds):
                if native is not None and not alone:
                    timed(native, mine)
        return {"seconds": [float(np.median(s)) if s else None for s in seconds]}

    def trial(self, dims: dict[str, int], seed: int, limit: int | None, calls: int) -> dict[str, Any]:
        """The loaded program (or the trainer's step) at `dims` (inputs made here, not sent), with
        `limit` bytes for the model on a CPU enforced on this process (its address space may grow by
        no more, plus `ADDRESS_SLACK`, from the load on: an allocation past it fails here, or kills
        this process, never the caller); `calls` timed after a first call. Its peak memory over those
        calls (the model's: RSS above the warmed-up framework, or the device's own counter) and
        median seconds per call; on an accelerator, also the device memory free at the start."""
        import resource

        from .runtime.measure import device_free_bytes, device_peak_bytes, peak_rss_bytes, reset_peak_rss

        device = self.trainer.device if self.trainer is not None else self.exe.device
        free = device_free_bytes(self.target, device)
        if limit is not None and device == "cpu" and self.vm_after_import is not None:
            cap = self.vm_after_import + limit + ADDRESS_SLACK
            resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
        if device != "cpu":
            device_peak_bytes(self.target, device, reset=True)
        if self.trainer is not None:  # one training step per call
            inputs = random_inputs(self.trainer.inference_loss, seed, dims)
            call = functools.partial(self.trainer.step, *inputs)
        else:
            call = self.exe.prepared(*random_inputs(self.exe.graph, seed, dims))
        call()  # where jax, tf and MindSpore compile: the compiler's memory is its own, not the model's
        reset_peak_rss()  # from here: the weights, inputs and what the calls hold (a steady state)
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
        peak = (peak_rss_bytes() - self.rss_after_import if device == "cpu"
                else device_peak_bytes(self.target, device))
        return {"peak": peak, "seconds": float(np.median(seconds)), "free": free, "device": device}

    def stats(self) -> dict[str, Any]:
        from .runtime.measure import device_peak_bytes, peak_rss_bytes

        if self.on_ray:  # the actors hold the stages, in processes of their own
            return {"peak_rss": None, "model_rss": None, "device_peak": None}
        peak = peak_rss_bytes()
        base = self.rss_after_import
        device = device_peak_bytes(self.target, self.exe.device) if self.target is not None else None
        return {"peak_rss": peak, "model_rss": peak - base if peak is not None and base is not None else None,
                "device_peak": device}


def _pipeline_targets(directory: Path) -> list[str]:
    from .ir.parser import parse_ir
    from .ir.pipeline import plan_pipeline

    (ir,) = directory.glob("*.ir")
    return sorted({s.placement.target for s in plan_pipeline(parse_ir(ir.read_text(), str(ir))).stages})


def worker_main() -> None:
    """This module's worker: pinned to $SHIPEI_BENCH_CORES cores where set, serving `_Served`."""
    cores = os.environ.get("SHIPEI_BENCH_CORES")
    if cores and hasattr(os, "sched_setaffinity"):  # before any framework sizes its pools
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:int(cores)])
    served = _Served()
    serve({"load": served.load, "prepare": served.prepare, "sample": served.sample, "stats": served.stats,
           "programs": served.programs, "time": served.time, "trial": served.trial,
           "load_trainer": served.load_trainer})


def serve(handlers: Mapping[str, Callable[..., dict[str, Any]]]) -> None:
    """A worker's loop: each request (op, keyword arguments) on stdin answered with `handlers[op]`'s
    reply on the original stdout; a request that raises replies its error. Until stdin closes."""
    replies = replies_stream()
    while True:
        try:
            op, kwargs = receive(0, None)
        except EOFError:
            return
        try:
            reply = handlers[op](**kwargs)
        except ShipeiError as e:
            reply = {"error": str(e)}
        except MemoryError:
            reply = {"error": "MemoryError: out of memory"}
        except Exception as e:  # noqa: BLE001 - the framework's failure is this target's result
            reply = {"error": f"{type(e).__name__}: {e}"}
        send(replies, reply)


class BenchWorker:
    """The parent's handle on one worker process: this module's `worker_main`, or `command`, a
    worker of another program that answers the same requests (a benchmark's baseline)."""

    def __init__(self, env: Mapping[str, str], log: Path, command: Sequence[str] | None = None):
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(list(command or [sys.executable, "-m", "shipei.measuring"]),
                                         stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err,
                                         env={**os.environ, SCRATCH_ENV: str(log.parent), **env},
                                         start_new_session=True)

    def request(self, op: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
        """The worker's reply, or {"error": ...} when it failed, died or did not answer in time."""
        try:
            send(self.proc.stdin, (op, kwargs))
            return receive(self.proc.stdout.fileno(), time.monotonic() + timeout)
        except TimeoutError:
            self.stop()
            return {"error": f"no answer within {timeout:g} s; it was stopped{self._tail()}"}
        except (EOFError, OSError):
            code = self.proc.wait()
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            return {"error": f"the worker {how}{self._tail()}"}

    def _tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f" (its log: {lines[-1]})" if lines else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


if __name__ == "__main__":
    worker_main()
