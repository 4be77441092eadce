"""Running a partitioned model: each stage in a worker thread of its own, micro-batches flowing
through them (GPipe's schedule, forward only), numpy in and numpy out.

A stage's worker pins itself to a core and holds its framework to one intra-op thread there before
it loads the stage's program: on a CPU, frameworks that each use every core fight over them, and
two stages then run slower side by side than one after the other (measured here: 0.74-1.0x
unpinned, 1.8-2.0x pinned). jax and MindSpore size their thread pools from the first thread that
uses them and offer no other working setting; torch's `set_num_threads` holds only for the thread
that calls it. So a framework that already ran in this process before the pipeline was loaded keeps
its unpinned pools, and its stage spreads over both cores (a transformer, torch then jax, jax used
first: 1.15x pipelined instead of 1.64x). Stage k takes micro-batch m once stage k-1 has finished
it, so the stages overlap on consecutive micro-batches; each hand-off between placements is timed
and logged. Only a stage's own worker calls into its framework: it exports what it hands on and
converts the outputs to numpy itself (MindSpore makes a call from another thread wait for its work
in flight).

A stage is the generated driver's `Stage` (its program, model and device) and a worker is where it
runs: `Ray` actors can hold the same stages (the next step beyond one machine).
"""

from __future__ import annotations

import os
import queue
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..codegen.frameworks import require_framework
from ..ir.batch import batch_layout
from ..ir.errors import ShipeiError, whole_number
from ..ir.graph import Graph
from ..ir.pipeline import PipelinePlan
from .executable import DeviceFallbackWarning, checked_inputs, declared, import_module_file
from .indices import IndexCheck
from .measure import ready


@dataclass(frozen=True)
class Transfer:
    """One hand-off between placements: from and to which stage, its bytes, whether it was copied
    (False: DLPack gave the next framework the same memory) and how long it took (None where it
    is not measured apart: through Ray's object store, inside the next stage's call)."""

    source: int
    destination: int
    bytes: int
    copied: bool
    seconds: float | None


class _Worker:
    """A thread that owns one stage: pinned, it loads the stage's program, then runs the micro-batches
    it is given, in order, and hands each to the next worker."""

    def __init__(self, driver: ModuleType, index: int, cores: set[int] | None, allow_fallback: bool):
        self.driver, self.index, self.cores = driver, index, cores
        self.inbox: queue.Queue = queue.Queue()
        self.stage: Any = None
        self.error: BaseException | None = None
        self._loaded = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(allow_fallback,), name=f"shipei-stage-{index}",
                                        daemon=True)
        self._thread.start()

    def wait_loaded(self) -> None:
        self._loaded.wait()
        if self.error is not None:
            raise self.error

    def _main(self, allow_fallback: bool) -> None:
        try:
            self.stage = load_stage(self.driver, self.index, allow_fallback, self.cores)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e
        self._loaded.set()
        if self.error is not None:
            return
        for job in iter(self.inbox.get, None):
            job(self)

    def close(self) -> None:
        self.inbox.put(None)


class Pipelined:
    """What every way of running a partitioned model shares: called with numpy arrays as an
    `Executable` is, inputs checked the same way, the batch split into micro-batches and joined
    again. A subclass runs the micro-batches through its stages (`_flow`)."""

    graph: Graph
    plan: PipelinePlan
    driver: ModuleType
    _indices: IndexCheck | None
    closed = False  # close() ends the stages: a call after it would wait for them for ever

    def run(self, *inputs: Any, micro_batches: int = 1) -> list[np.ndarray]:
        """All outputs, as numpy arrays at their declared dtypes."""
        self._check_open()
        arrays, empty = checked_inputs(self.graph, inputs, self._indices)
        if empty is not None:
            return empty
        parts, layout = self._split(arrays, micro_batches)
        results = self._flow(parts)
        return declared(self.graph, results[0] if len(results) == 1 else self._join(results, layout))

    def __call__(self, *inputs: Any, micro_batches: int = 1) -> np.ndarray | tuple[np.ndarray, ...]:
        outputs = self.run(*inputs, micro_batches=micro_batches)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _flow(self, parts: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        """Each micro-batch's outputs, as numpy."""
        raise NotImplementedError

    def _check_open(self) -> None:
        if self.closed:
            raise ShipeiError(f"{self.graph.name}'s pipeline was closed: its stages have ended",
                              hint="load the compiled model again")

    def _split(self, arrays: list[np.ndarray], micro_batches: int) -> tuple[list[list[np.ndarray]], Any]:
        if whole_number(micro_batches, "micro_batches", least=1) == 1:
            return [arrays], None
        layout = batch_layout(self.graph, "micro-batching")
        batch = next(a.shape[axes[0]] for a, axes in zip(arrays, layout.inputs) if axes)
        cuts = np.array_split(np.arange(batch), min(micro_batches, batch))
        return [[np.take(a, idx, axis=axes[0]) if axes else a for a, axes in zip(arrays, layout.inputs)]
                for idx in cuts], layout

    @staticmethod
    def _join(results: list[list[np.ndarray]], layout: Any) -> list[np.ndarray]:
        return [np.concatenate([r[j] for r in results], axis=axes[0]) if axes else results[0][j]
                for j, axes in enumerate(layout.outputs)]


class PipelineExecutable(Pipelined):
    """A partitioned model loaded for running in this process: call it with numpy arrays, as an
    `Executable`.

    `run(*inputs, micro_batches=k)` splits the batch into k micro-batches that the stages work on
    side by side; the result equals the unsplit run's. `transfers` logs the last call's hand-offs;
    `placements` and `fell_back` say where each stage runs.
    """

    def __init__(self, graph: Graph, plan: PipelinePlan, driver_path: Path, weights: dict[str, np.ndarray],
                 allow_fallback: bool = False, *, check_indices: bool = True, pin: bool = True):
        self.graph, self.plan = graph, plan
        for target in sorted({s.placement.target for s in plan.stages}):
            require_framework(target)
        self.driver = import_module_file(driver_path)
        cores = sorted(os.sched_getaffinity(0)) if pin and hasattr(os, "sched_getaffinity") else None
        self._workers = []
        for k, (_, placement) in enumerate(self.driver.STAGES):
            core = {cores[stage_core(placement, k) % len(cores)]} if cores else None
            self._workers.append(_Worker(self.driver, k, core, allow_fallback))
        try:
            for w in self._workers:
                w.wait_loaded()
        except BaseException:
            self.close()
            raise
        self.stages = [w.stage for w in self._workers]
        warn_fallbacks([(s.index, s.placement, s.fell_back) for s in self.stages])
        self.fell_back = any(s.fell_back for s in self.stages)
        self._indices = IndexCheck.build(graph, weights) if check_indices else None
        self.transfers: list[Transfer] = []

    @property
    def placements(self) -> list[str]:
        return [f"{s.placement} ({s.device})" for s in self.stages]

    def on_stage(self, index: int, fn: Callable[[Any], Any]) -> Any:
        """`fn(stage)` run in stage `index`'s worker thread, where its framework runs (pinned), and
        its result; what it raises is raised here. To time or inspect one stage alone."""
        self._check_open()
        if not 0 <= index < len(self._workers):
            raise ShipeiError(f"{self.graph.name}'s pipeline has stages 0 to {len(self._workers) - 1}, not {index}")
        done: queue.Queue = queue.Queue()

        def job(worker: _Worker) -> None:
            try:
                done.put((fn(worker.stage), None))
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                done.put((None, e))

        self._workers[index].inbox.put(job)
        result, error = done.get()
        if error is not None:
            raise error
        return result

    def time_stages(self, *inputs: Any, repeats: int = 5) -> list[float]:
        """Each stage's seconds on its part of `inputs` (one micro-batch), alone in its worker: the
        median of `repeats` calls, after one that warms it up, each including what it receives."""
        whole_number(repeats, "repeats", least=1)
        arrays, _ = checked_inputs(self.graph, inputs, self._indices)
        values: dict = {("input", i): x for i, x in enumerate(arrays)}
        out = []
        for k, stage in enumerate(self.stages):
            def timed(stage: Any) -> tuple[dict, float]:
                made, seconds = stage.step(self.stages, values), []
                for _ in range(repeats):
                    start = time.perf_counter()
                    ready(stage.step(self.stages, values).values())
                    seconds.append(time.perf_counter() - start)
                return made, statistics.median(seconds)

            made, seconds = self.on_stage(k, timed)
            values.update(made)
            out.append(seconds)
        return out

    def _flow(self, parts: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        """Each micro-batch through every stage in order; stage k works on micro-batch m while
        stage k+1 works on m-1."""
        values = [{("input", i): x for i, x in enumerate(p)} for p in parts]
        log: list[tuple] = []
        finished: queue.Queue = queue.Queue()
        last = len(self._workers) - 1

        def job(m: int):
            def run(worker: _Worker) -> None:
                try:
                    values[m].update(worker.stage.step(self.stages, values[m], log))
                except BaseException as e:  # noqa: BLE001 - reported by the caller, naming the stage
                    finished.put((m, worker.index, e))
                    return
                if worker.index == last:
                    finished.put((m, worker.index, None))
                else:
                    self._workers[worker.index + 1].inbox.put(job(m))
            return run

        for m in range(len(parts)):
            self._workers[0].inbox.put(job(m))
        results: list[list[np.ndarray] | None] = [None] * len(parts)
        for _ in parts:
            m, k, error = finished.get()
            if error is not None:
                raise self._stage_error(k, error) from error
            results[m] = self.driver.outputs(values[m])
        self.transfers = [Transfer(*entry) for entry in log]
        return results

    def _stage_error(self, k: int, error: BaseException) -> ShipeiError:
        """`error` in stage k, as the error the caller sees: naming the stage and its placement."""
        if isinstance(error, ShipeiError):
            return error
        return ShipeiError(f"stage {k} ({self.driver.STAGES[k][1]}) failed: {type(error).__name__}: {error}")

    def close(self) -> None:
        """Stop the stages' worker threads."""
        self.closed = True
        for w in self._workers:
            w.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PipelineExecutable({self.graph.name}, stages={self.placements})"


def load_stage(driver: ModuleType, index: int, allow_fallback: bool, cores: set[int] | None = None,
               numbered: bool = True) -> Any:
    """Stage `index` of the generated `driver`, loaded in the calling thread, pinned first to `cores`
    (with the pools its framework starts there: torch's to as many threads). A placement absent
    here is a `ShipeiError` unless `allow_fallback`. Not `numbered`, a GPU placement's number is
    not read (the process sees only the GPU it was given)."""
    if cores is not None:
        os.sched_setaffinity(0, cores)
        if driver.STAGES[index][1].startswith("torch:cpu"):
            import torch

            torch.set_num_threads(len(cores))  # per thread in torch
    try:
        return driver.Stage(index, allow_fallback, *(() if numbered else (False,)))  # as drivers saved before it
    except RuntimeError as e:
        if "is not available here" in str(e):  # the driver's own words: it runs without shipei
            raise ShipeiError(str(e), hint="pass allow_fallback=True to run it on the CPU") from None
        raise


def stage_core(placement: str, index: int) -> int:
    """The core stage `index` is pinned to, before taking it modulo the cores at hand: the one its
    placement names (`torch:cpu:1`), else one per stage in order."""
    parts = placement.split(":")
    return int(parts[2]) if parts[1] == "cpu" and len(parts) == 3 else index


def warn_fallbacks(stages: Sequence[tuple[int, str, bool]]) -> None:
    """A `DeviceFallbackWarning` for each (index, placement, fell back) stage that runs on the CPU instead."""
    for index, placement, fell_back in stages:
        if fell_back:
            warnings.warn(f"stage {index}: {placement} is not available here; it runs on the CPU",
                          DeviceFallbackWarning, stacklevel=3)


def summarize(transfers: Sequence[Transfer]) -> str:
    """`2 hand-offs, 64.0 KiB, zero-copy, 61 us`: what the last call moved between placements."""
    if not transfers:
        return "no hand-offs"
    size = sum(t.bytes for t in transfers)
    ways = " and ".join(sorted({"copied" if t.copied else "zero-copy" for t in transfers}))
    seconds = [t.seconds for t in transfers if t.seconds is not None]
    timed = f", {sum(seconds) * 1e6:.0f} us" if len(seconds) == len(transfers) else ""
    return f"{len(transfers)} hand-off{'s' * (len(transfers) != 1)}, {size / 1024:.1f} KiB, {ways}{timed}"
