"""`shipei bench`: a model's throughput, latency, compile time, memory and energy on every target
and device at hand, side by side, and which to deploy on.

Each target (or a `--device-map` pipeline) runs in a worker process of its own (`runtime.workers`):
its framework's thread pools, flags and memory stay its own, and a crash or a hang is reported as
that target's failure. The workers take turns: in each round every worker runs one block of calls
while the others wait, the order rotating, so that drift in the machine's load meets all of them
and none competes with another for the cores. A call is what a deployed program pays: the generated
module's own `run` on numpy inputs checked once (`Executable.prepared`), numpy out; each call is
timed on its own, so latency percentiles are of single calls (MLPerf's single-stream view) and
throughput is samples over the time the calls took (its offline view).

Compile time is shipei's (passes and code generation, in this process, timed on a second compile: the
first imports the framework where its generator asks it for names) plus the worker's load (the
program imported, its weights bound) plus its first call, where jax, TensorFlow and MindSpore trace
and compile. Memory is the worker's peak resident set from the load on, and the part of it above
the framework's own after import ("model"); on an accelerator, the framework's own peak counter. On
Ray (`--ray`) the stages live in actors' processes, and no memory is reported for them.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import api
from .ir.batch import batch_layout
from .ir.errors import ShipeiError
from .ir.graph import Graph
from .ir.inputs import random_inputs
from .ir.profile import Profile
from .measuring import REQUEST_TIMEOUT, BenchWorker, Entry, in_turn, thread_env
from .partitioned import CompiledPipeline
from .runtime.distributed import RayOptions
from .runtime.measure import percentile

#: Seconds one block of calls aims at; a worker's turn in a round.
BLOCK = 0.05


@dataclass
class Row:
    """What one entry measured at one batch, or why it could not (`error`)."""

    name: str
    batch: int
    device: str = ""
    error: str = ""
    compile_s: float = math.nan
    first_call_s: float = math.nan
    latencies: list[float] = field(default_factory=list, repr=False)
    peak_rss: int | None = None
    model_rss: int | None = None
    device_peak: int | None = None
    joules: float | None = None  # per call, where a meter read it
    energy_note: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def throughput(self) -> float:
        """Samples per second over the time the calls took."""
        return self.batch * len(self.latencies) / sum(self.latencies)

    def latency(self, q: float) -> float:
        return percentile(self.latencies, q)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.ok:
            out.update(throughput=self.throughput, p50=self.latency(50), p90=self.latency(90), p99=self.latency(99))
        return out


# -- the parent ---------------------------------------------------------------------------
def compile_entries(graph: Graph, targets: Sequence[str], directory: Path, *, opt: int, seed: int,
                    device: str = "auto", device_map: Any = None, micro_batches: int = 1,
                    ray: RayOptions | None = None, options: Mapping[str, Any] | None = None,
                    profile: Profile | None = None) -> tuple[list[Entry], list[Row]]:
    """Each target's program (or, with `device_map`, the pipeline) compiled and saved under
    `directory`, with shipei's compile time; a target whose generator refuses the model gives a Row
    saying why instead."""
    entries, refused = [], []
    for target in targets if device_map is None else ["pipeline"]:
        def compiled(target: str = target) -> api.Compiled | CompiledPipeline:
            return api.compile(graph, target if device_map is None else "torch", seed=seed, opt=opt,
                               device_map=device_map, options=options, profile=profile)

        try:
            compiled()  # the torch and MindSpore generators import their framework once, for its names
        except ShipeiError as e:
            refused.append(Row(target, 0, error=str(e)))
            continue
        start = time.perf_counter()
        program = compiled()
        seconds = time.perf_counter() - start
        path = program.save(directory / target)
        if isinstance(program, CompiledPipeline):
            name = "pipeline" + (" on Ray" if ray else "")
            entries.append(Entry(name, path.parent, seconds, micro_batches=micro_batches, ray=ray))
        else:
            entries.append(Entry(target, path.parent, seconds, target=target, device=device))
    return entries, refused


class Progress:
    """A bar of `total` steps on stderr when it is a terminal; else a line per phase."""

    def __init__(self, total: int, enabled: bool | None = None, command: str = "bench"):
        self.total, self.done, self.command = total, 0, command
        self.tty = sys.stderr.isatty() if enabled is None else enabled

    def phase(self, text: str) -> None:
        """A line per phase where no bar is drawn (not a terminal, or no steps to count)."""
        if not self.tty or not self.total:
            print(f"{self.command}: {text}", file=sys.stderr, flush=True)

    def step(self, text: str) -> None:
        self.done += 1
        if self.tty:
            width = 30
            filled = round(width * self.done / max(1, self.total))
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {text:<40}", end="",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


def measure(graph: Graph, entries: Sequence[Entry], dims: Mapping[str, int], batches: Sequence[int] | None,
            *, rounds: int = 10, threads: int | None = None, seed: int = 0, block: float = BLOCK,
            timeout: float = REQUEST_TIMEOUT, progress: Progress | None = None) -> list[Row]:
    """Every entry at every batch size in `batches` (the batch symbol's values; None: `dims` as
    given), `rounds` blocks each, the workers taking turns."""
    symbol, sizes = _batch_sizes(graph, dims, batches)
    progress = progress or Progress(len(entries) * len(sizes) * (rounds + 1))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="shipei-bench-") as logs:
        progress.phase(f"starting {len(entries)} worker{'s' * (len(entries) != 1)}")
        workers = {e.name: BenchWorker(thread_env(threads, e.target), Path(logs) / f"{i}.log")
                   for i, e in enumerate(entries)}
        try:
            loaded = {e.name: workers[e.name].request("load", timeout, entry=e) for e in entries}
            for size in sizes:
                at = dict(dims) if symbol is None else {**dims, symbol: size}
                inputs = random_inputs(graph, seed, at)
                batch = inputs[0].shape[0] if symbol is None and inputs and inputs[0].ndim else size or 1
                rows += _measure_batch(entries, workers, loaded, inputs, batch, rounds, block, timeout, progress)
        finally:
            for w in workers.values():
                w.stop()
    progress.close()
    return rows


def _batch_sizes(graph: Graph, dims: Mapping[str, int], batches: Sequence[int] | None
                 ) -> tuple[str | None, list[int | None]]:
    symbol = None
    if batches:
        symbol = batch_layout(graph, "--batch-sizes").symbol
        if any(b < 1 for b in batches):
            raise ShipeiError(f"batch sizes must be at least 1, got {', '.join(map(str, batches))}")
    symbols_given(graph, dims, symbol)
    return symbol, list(batches) if batches else [None]


def symbols_given(graph: Graph, dims: Mapping[str, int], batch: str | None = None) -> None:
    """A `ShipeiError` naming each shape symbol of `graph` that `dims` gives no value (but `batch`)."""
    missing = [s for s in graph.symbols() if s not in dims and s != batch]
    if missing:
        raise ShipeiError(f"{graph.name}: give every shape symbol a value: {', '.join(missing)} "
                          f"{'has' if len(missing) == 1 else 'have'} none",
                          hint=" ".join(f"--dim {s}=N" for s in missing))


def _measure_batch(entries: Sequence[Entry], workers: Mapping[str, BenchWorker], loaded: Mapping[str, dict],
                   inputs: list[np.ndarray], batch: int, rounds: int, block: float, timeout: float,
                   progress: Progress) -> list[Row]:
    rows = {e.name: Row(e.name, batch, compile_s=e.compile_s) for e in entries}
    live = []
    progress.phase(f"batch {batch}: warming up")
    for e in entries:
        row, w, load = rows[e.name], workers[e.name], loaded[e.name]
        row.error = load.get("error", "")
        if not row.error:
            row.device, row.energy_note = load["device"], load["energy_note"]
            first = w.request("prepare", timeout, inputs=inputs, micro_batches=e.micro_batches)
            row.error = first.get("error", "")
        if not row.error:
            row.first_call_s = first["first_call_s"]
            row.compile_s = e.compile_s + load["load_s"] + row.first_call_s
            probe = w.request("sample", timeout, calls=3)
            row.error = probe.get("error", "")
        if row.error:
            progress.step(f"{e.name}: failed")
            continue
        live.append((e.name, max(1, math.ceil(block / max(float(np.median(probe["seconds"])), 1e-7)))))
        progress.step(f"{e.name} warm")
    progress.phase(f"batch {batch}: {rounds} rounds of {', '.join(n for n, _ in live) or 'nothing'}")
    joules: dict[str, list[float]] = {n: [] for n, _ in live}
    for r in range(rounds):
        for name, calls in in_turn(live, r):
            row = rows[name]
            if row.error:
                continue
            reply = workers[name].request("sample", timeout, calls=calls)
            row.error = reply.get("error", "")
            if not row.error:
                row.latencies += reply["seconds"]
                if reply["joules"] is not None:
                    joules[name].append(reply["joules"] / calls)
            progress.step(f"{name} round {r + 1}")
    for name, _ in live:
        row = rows[name]
        if not row.error:
            stats = workers[name].request("stats", timeout)
            row.peak_rss, row.model_rss, row.device_peak = stats.get("peak_rss"), stats.get("model_rss"), \
                stats.get("device_peak")
            row.joules = float(np.median(joules[name])) if joules[name] else None
        else:
            row.latencies = []
    return list(rows.values())


# -- the report ---------------------------------------------------------------------------
def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def table(rows: Sequence[Row]) -> list[str]:
    """The results as a Markdown table, a row per entry and batch; failures below it."""
    out = ["| target | device | batch | samples/s | p50 ms | p90 ms | p99 ms | compile s | peak RSS MiB "
           "| model MiB | device MiB | J/sample |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if not r.ok:
            continue
        energy = "unavailable" if r.joules is None else f"{r.joules / r.batch:.3g}"
        out.append(f"| {r.name} | {r.device} | {r.batch} | {r.throughput:,.1f} | {r.latency(50) * 1e3:.3f} | "
                   f"{r.latency(90) * 1e3:.3f} | {r.latency(99) * 1e3:.3f} | {r.compile_s:.2f} | "
                   f"{_mib(r.peak_rss)} | {_mib(r.model_rss)} | {_mib(r.device_peak)} | {energy} |")
    notes = sorted({r.energy_note for r in rows if r.ok and r.joules is None and r.energy_note})
    out += [f"energy unavailable: {note}" for note in notes]
    out += [f"{r.name}: {r.error}" for r in rows if not r.ok]
    return out


def ranking(rows: Sequence[Row]) -> str:
    """Which entry to deploy on here: the most samples/s at the largest batch measured, against the
    next; and, when it differs, the lowest p99 latency at the smallest batch."""
    ok = [r for r in rows if r.ok]
    if not ok:
        return "nothing ran: no target to recommend"
    largest = max(r.batch for r in ok)
    fastest = sorted((r for r in ok if r.batch == largest), key=lambda r: -r.throughput)
    best = fastest[0]
    line = f"deploy on {best.name} ({best.device}): {best.throughput:,.1f} samples/s at batch {largest}"
    if len(fastest) > 1:
        line += f", {best.throughput / fastest[1].throughput:.2f}x {fastest[1].name}, the next"
    smallest = min(r.batch for r in ok)
    quickest = min((r for r in ok if r.batch == smallest), key=lambda r: r.latency(99))
    if quickest.name != best.name or smallest != largest:
        line += (f"; lowest p99 latency at batch {smallest}: {quickest.name} "
                 f"{quickest.latency(99) * 1e3:.3f} ms")
    return line


def plot(rows: Sequence[Row], path: Path, title: str) -> None:
    """Draw, for people: each entry's latency distribution at the largest batch, and its
    throughput against batch size. `.png` or `.svg` as an image, `.html` as a page with the table."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ShipeiError("--plot needs matplotlib, which is not installed",
                          hint="pip install 'shipei[bench]'") from None
    if path.suffix not in (".png", ".svg", ".html"):
        raise ShipeiError(f"--plot {path}: write a .png, .svg or .html file")
    ok = [r for r in rows if r.ok]
    if not ok:
        raise ShipeiError("nothing to plot: no target ran")
    largest = max(r.batch for r in ok)
    at_largest = [r for r in ok if r.batch == largest]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.violinplot([np.array(r.latencies) * 1e3 for r in at_largest], showextrema=False,
                    quantiles=[[0.5, 0.9, 0.99]] * len(at_largest))
    left.set_xticks(range(1, len(at_largest) + 1), [r.name for r in at_largest])
    left.set_ylabel("latency per call, ms (lines: p50, p90, p99)")
    medians = [r.latency(50) for r in at_largest]
    if max(medians) > 10 * min(medians):  # one target far slower would flatten the others' shapes
        left.set_yscale("log")
    left.set_title(f"latency at batch {largest}")
    for name in dict.fromkeys(r.name for r in ok):
        mine = sorted((r for r in ok if r.name == name), key=lambda r: r.batch)
        right.plot([r.batch for r in mine], [r.throughput for r in mine], marker="o", label=name)
    right.set_xscale("log", base=2)
    sizes = sorted({r.batch for r in ok})
    right.set_xticks(sizes, [str(b) for b in sizes])
    right.set_xlabel("batch size")
    right.set_ylabel("samples / s")
    right.set_title("throughput against batch size")
    right.legend()
    figure.suptitle(title)
    figure.tight_layout()
    if path.suffix == ".html":
        import html
        import io

        svg = io.StringIO()
        figure.savefig(svg, format="svg")
        body = svg.getvalue()[svg.getvalue().index("<svg"):]
        path.write_text(f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                        f"<h1>{html.escape(title)}</h1>{body}<pre>{html.escape(chr(10).join(table(rows)))}</pre>"
                        f"<p>{html.escape(ranking(rows))}</p>", encoding="utf-8")
    else:
        figure.savefig(path)
    plt.close(figure)

