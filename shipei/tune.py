"""`shipei tune`: the largest batch that fits the device's memory (or a given limit), and the batch
that gives the most throughput, as Lightning's BatchSizeFinder finds them, each answer measured.

The memory a batch needs is estimated first from the memory plan (`runtime.memory`: weights,
inputs, planned activations and the largest op's workspace); the search starts from a power of
two below the estimate's answer. Then real trials decide: the batch doubles until a trial fails,
and the last that fits and the first that fails are bisected until they are one batch, or a
sixteenth, apart. Each trial runs
the compiled program in a fresh worker process (`shipei.measuring`): on a CPU the limit is
enforced on that process (its address space may grow by no more than the limit, and a slack for
what glibc reserves, from the model's load on), so that running out of memory fails the trial, or
kills its process, and never the caller. A trial fits when it completes and its model's peak
memory (resident set above the warmed-up framework, over calls after the first, which compiles;
on an accelerator, the framework's own peak counter) stays within the budget: the limit less a
margin, for what a real run adds (other inputs, fragmentation). With no limit given, it is the
memory available now: the machine's for a CPU, the device's free memory for an accelerator.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import api
from .bench import Progress, symbols_given
from .ir.batch import batch_layout, batch_symbol
from .ir.errors import ShipeiError
from .ir.graph import Graph
from .ir.optim import Optimizer
from .measuring import REQUEST_TIMEOUT, BenchWorker, Entry, thread_env
from .runtime.memory import estimate_training_memory

#: The part of the limit a batch may not use: Lightning's finder keeps no margin and users then
#: trim; a tenth leaves room for what the trials do not hold (other inputs, fragmentation).
MARGIN = 0.1
MAX_BATCH = 1 << 16
#: The bisection stops when the first batch that fails is within 1/RESOLUTION of the last that fits:
#: closer, and a process's resident set moves by more than a batch's memory from run to run
#: (measured here, the transformer at T=64: 198 MiB at B=288 and 219 MiB at B=292, then 238 MiB at
#: 320 and 246 MiB at 304), as the allocator keeps or returns freed blocks.
RESOLUTION = 16
#: glibc's malloc maps blocks from 128 KiB up on their own, and unmaps them when freed. By default
#: it raises that threshold as such blocks are freed, and later ones then come from the heap, which
#: keeps what is freed: the same batch then peaked 69 MiB in one trial and 83 MiB in the next (the
#: MLP at B=8704). Fixed, a trial's peak is the memory the program holds, run after run.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes from `4GiB`, `512 MiB`, `1.5GB` or `1000000`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS:
        raise ShipeiError(f"'{text}' is not a memory size", hint="e.g. 4GiB, 512MiB, 2GB or a number of bytes")
    size = float(match.group(1)) * _UNITS[unit]
    if size == math.inf:
        raise ShipeiError(f"'{text}' is more memory than any machine has")
    size = int(size)
    if size <= 0:
        raise ShipeiError(f"a memory limit must be more than 0 bytes, got '{text}'")
    return size


def available_memory() -> int:
    """The machine's memory available now (MemAvailable), in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise ShipeiError("cannot tell how much memory this machine has free", hint="pass --memory-limit")


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


@dataclass
class Trial:
    """One batch run for real: its estimate, and its measured peak and seconds per call, or why it failed."""

    batch: int
    estimate: int
    peak: int | None = None
    seconds: float | None = None
    error: str = ""

    def fits(self, budget: float) -> bool:
        return not self.error and (self.peak or 0) <= budget

    @property
    def throughput(self) -> float | None:
        return None if self.error or not self.seconds else self.batch / self.seconds


@dataclass
class Tuned:
    """What the search found: `largest` fits the budget and `failed` (the next batch up) does not."""

    graph: str
    target: str
    device: str
    symbol: str
    limit: int
    given: bool
    margin: float
    trials: list[Trial] = field(default_factory=list)

    @property
    def budget(self) -> float:
        return self.limit * (1 - self.margin)

    @property
    def largest(self) -> Trial:
        return max((t for t in self.trials if t.fits(self.budget)), key=lambda t: t.batch)

    @property
    def failed(self) -> Trial | None:
        above = [t for t in self.trials if t.batch > self.largest.batch]
        return min(above, key=lambda t: t.batch) if above else None

    @property
    def fastest(self) -> Trial:
        return max((t for t in self.trials if t.fits(self.budget)), key=lambda t: t.throughput or 0.0)

    def table(self) -> list[str]:
        rows = [f"| {self.symbol} | estimate MiB | measured MiB | measured / estimate | samples/s | fits |",
                "|---:|---:|---:|---:|---:|---|"]
        for t in sorted(self.trials, key=lambda t: t.batch):
            ratio = f"{t.peak / t.estimate:.2f}" if t.peak is not None and not t.error else "-"
            rate = f"{t.throughput:,.1f}" if t.throughput else "-"
            verdict = "yes" if t.fits(self.budget) else f"no: {_first_line(t.error) or 'over budget'}"
            rows.append(f"| {t.batch} | {_mib(t.estimate)} | {_mib(t.peak if not t.error else None)} | {ratio} | "
                        f"{rate} | {verdict} |")
        return rows

    def summary(self) -> list[str]:
        best, fastest, failed = self.largest, self.fastest, self.failed
        lines = [f"largest batch that fits: {self.symbol}={best.batch}, measured {_mib(best.peak)} MiB against an "
                 f"estimate of {_mib(best.estimate)} MiB ({best.peak / best.estimate:.2f}x)"
                 if best.peak is not None else f"largest batch that fits: {self.symbol}={best.batch}"]
        if failed is None:
            lines.append(f"  (the budget was not reached by --max-batch {best.batch})")
        else:
            why = _first_line(failed.error) if failed.error else f"measured {_mib(failed.peak)} MiB, over budget"
            lines.append(f"  {self.symbol}={failed.batch} does not fit: {why}")
        lines.append(f"most throughput: {self.symbol}={fastest.batch}, {fastest.throughput:,.1f} samples/s")
        return lines

    def as_json(self) -> dict[str, Any]:
        return {"model": self.graph, "target": self.target, "device": self.device, "symbol": self.symbol,
                "limit": self.limit, "budget": self.budget, "margin": self.margin,
                "largest": self.largest.batch, "fastest": self.fastest.batch,
                "trials": [{**asdict(t), "throughput": t.throughput} for t in self.trials]}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:160] if text.strip() else ""


def estimated_batch(estimate: Callable[[int], int], budget: float, cap: int) -> int:
    """The largest batch (at most `cap`) whose `estimate` is within `budget`; 0 when not even 1 is."""
    def fits(b: int) -> bool:
        return estimate(b) <= budget

    if not fits(1):
        return 0
    lo = 1
    while lo < cap and fits(min(2 * lo, cap)):
        lo = min(2 * lo, cap)
    hi = min(2 * lo, cap + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


@dataclass(frozen=True)
class Training:
    """`tune --train`: the batch for training steps of `source`'s loss with `optimizer`. A step
    holds more than a forward call: gradients, the optimizer's state and the activations the
    backward pass reads (`runtime.memory.TrainingEstimate`)."""

    source: Path
    optimizer: str = "adamw"
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # the model's parameters (`--set`)


def tune(graph: Graph, target: str, dims: Mapping[str, int], *, limit: int | None = None, margin: float = MARGIN,
         device: str = "auto", max_batch: int = MAX_BATCH, opt: int = 2, seed: int = 0, calls: int = 5,
         progress: Progress | None = None, training: Training | None = None) -> Tuned:
    """Search the batch symbol's value for `graph` on `target`; `dims` gives the other symbols.
    With `training`, `graph` is the loss graph and each trial takes training steps."""
    if not 0 <= margin < 1:
        raise ShipeiError(f"--margin must be at least 0 and less than 1, got {margin:g}")
    if max_batch < 1:
        raise ShipeiError(f"--max-batch must be at least 1, got {max_batch}")
    symbol = (batch_symbol(graph, "tuning the training batch size") if training
              else batch_layout(graph, "tuning the batch size").symbol)
    symbols_given(graph, dims, symbol)
    if symbol in dims:
        raise ShipeiError(f"{symbol} is the batch size tune searches: leave out --dim {symbol}=...")
    progress = progress or Progress(0, command="tune")
    with tempfile.TemporaryDirectory(prefix="shipei-tune-") as tmp:
        if training is None:
            compiled = api.compile(graph, target, seed=seed, opt=opt)
            entry = Entry(target, compiled.save(Path(tmp) / target).parent, 0.0, target, device)
            load, how = "load", {"entry": entry}

            def estimate(at: Mapping[str, int]) -> int:
                return compiled.estimate_memory(**at).total_bytes
        else:
            load, how = "load_trainer", {"source": str(training.source), "target": target, "model": training.model,
                                         "optimizer": training.optimizer, "seed": seed, "params": dict(training.params),
                                         "device": "cpu" if device == "auto" else device}
            slots = len(Optimizer.named(training.optimizer).state)

            def estimate(at: Mapping[str, int]) -> int:
                return estimate_training_memory(graph, at, slots).total_bytes

        def trial(batch: int, limit: int | None) -> tuple[Trial, dict[str, Any]]:
            """The trial at `batch`, and where it ran (device, free memory there) when it did."""
            at = {**dims, symbol: batch}
            t = Trial(batch, estimate(at))
            worker = BenchWorker({**thread_env(None), **STEADY_MALLOC}, Path(tmp) / f"trial-{batch}.log")
            try:
                reply = worker.request(load, REQUEST_TIMEOUT, **how)
                if "error" not in reply:
                    reply = worker.request("trial", REQUEST_TIMEOUT, dims=at, seed=seed, limit=limit, calls=calls)
            finally:
                worker.stop()
            t.error = reply.get("error", "")
            if t.error:
                return t, {}
            t.peak, t.seconds = reply["peak"], reply["seconds"]
            return t, reply

        progress.phase(f"trial {symbol}=1")
        first, ran = trial(1, limit)
        if first.error and limit is not None:  # for want of memory, or at all? Unbounded, it tells
            unbounded, ran = trial(1, None)
            if not unbounded.error:
                raise ShipeiError(f"a memory limit of {_mib(limit)} MiB is too small for {symbol}=1: it failed under "
                                  f"it ({_first_line(first.error)}) and needs {_mib(unbounded.peak)} MiB without "
                                  f"(the estimate is {_mib(first.estimate)} MiB)", hint="raise --memory-limit")
        if first.error:
            raise ShipeiError(f"{graph.name} on {target} did not run at {symbol}=1: {first.error}")
        given = limit is not None
        if limit is None:
            limit = ran["free"] if ran["device"] != "cpu" else available_memory()
            if limit is None:
                raise ShipeiError(f"{target} does not say how much {ran['device']} memory is free",
                                  hint="pass --memory-limit")
        result = Tuned(graph.name, target, ran["device"], symbol, limit, given, margin, [first])
        if not first.fits(result.budget):
            raise ShipeiError(f"a memory limit of {_mib(limit)} MiB ({_mib(result.budget)} MiB after the "
                              f"{margin:.0%} margin) is too small for {symbol}=1: it needs {_mib(first.peak)} MiB "
                              f"(measured; the estimate is {_mib(first.estimate)} MiB)",
                              hint="raise --memory-limit or lower --margin")

        def run(batch: int) -> Trial:
            progress.phase(f"trial {symbol}={batch}")
            t, _ = trial(batch, limit)
            result.trials.append(t)
            return t

        guess = estimated_batch(lambda b: estimate({**dims, symbol: b}), result.budget, max_batch)
        lo, hi = 1, None
        batch = max(2, 1 << max(0, (guess // 2).bit_length() - 1)) if guess >= 4 else 2
        while hi is None and lo < max_batch:  # double until a trial fails
            batch = min(batch, max_batch)
            if run(batch).fits(result.budget):
                lo, batch = batch, 2 * batch
            else:
                hi = batch
        while hi is not None and hi - lo > max(1, lo // RESOLUTION):  # bisect: last that fits, first that fails
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if run(mid).fits(result.budget) else (lo, mid)
    progress.close()
    return result


def limit_text(tuned: Tuned) -> str:
    where = "given" if tuned.given else ("available on this machine" if tuned.device == "cpu" else "free on the device")
    return (f"memory limit {_mib(tuned.limit)} MiB ({where}), budget {_mib(tuned.budget)} MiB after a "
            f"{tuned.margin:.0%} margin")

