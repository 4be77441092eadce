"""`shipei fuzz`: differential testing of every target against the reference on random graphs.

The parent process generates graphs (`strategies.generate`), draws inputs whose reference stays
in range and computes that reference. Compiling is what costs (about 0.1 s per jitted module),
so each batch of graphs is joined into one graph, their disjoint union with names prefixed, and
compiled once per target. Every target runs in its own long-lived worker process that imports
its framework once; a batch is sent to all workers at once, and the next one is generated while
they run.

A worker that exits (a framework crash) or misses its deadline (a hang) is reported, killed and
restarted; an exception is reported as an error. Such a batch is bisected to the graphs that
cause it. Every failure is minimized with `lowering.minimize`, each probe run by the same
worker, deduplicated, and saved as `NNN-target-kind-op.sp` (the DSL program), `.npz` (its
inputs, by name) and `.txt` (what failed and the `shipei run ... --check` command that replays
it). A jax or tf mismatch is replayed in a worker with XLA's default optimizations before it
counts (see `DEPLOYED_ENV`). A summary table ends the run and is saved as `summary.txt`.

With `opt` (`shipei fuzz -O N`) every batch runs through the -O pipeline with frozen weights
before the target lowers it, as `shipei.compile(..., opt=N, freeze=True)` does: the reference of the
graph as drawn judges the optimized program.

Workers are started as `python -m shipei.testing.fuzz --worker TARGET`. `inject` (for the
fuzzer's own tests) replaces one lowering rule inside the workers, e.g. `torch:mul={0} + {1}`,
to prove that a broken lowering is caught and minimized.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..ir.errors import ShipeiError
from ..ir.graph import Graph, disjoint_union
from ..ir.init import init_params
from ..ir.registry import all_ops
from ..ir.types import DType
from ..runtime.workers import SCRATCH_ENV, process_cpu, receive, replies_stream, send
from .lowering import (
    HETERO,
    Failure,
    Reference,
    available_targets,
    check_outputs,
    lazy_declared,
    minimize,
    reference,
    run_target,
    sample_inputs,
    subgraph,
)
from .strategies import DTYPES, generate, make_inputs, make_space

#: Environment of a worker: quiet frameworks, one thread each (graphs are tiny; four workers share the
#: cores). XLA's CPU backend compiles fused kernels with its classic elemental emitters and without
#: LLVM optimizations: most of a jax or tf worker's time was XLA compiling code that then runs once
#: (16-graph batches: 112 -> 35 ms per graph on jax, 128 -> 48 on tf). What is under test is
#: shipei's lowering to XLA's ops, which the HLO passes (fusion, layout, simplification) still see
#: as deployed; both emitters implement the same HLO semantics.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_v": "3", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "PYTHONWARNINGS": "ignore",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false --xla_cpu_use_fusion_emitters=false "
                           "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}
#: A worker as `shipei run` compiles: XLA with its default optimizations. Code XLA compiles without
#: them can round differently (an f16 rsqrt next to a rounding midpoint, an f16 convolution's sums),
#: so a jax or tf mismatch counts only if it shows here too.
DEPLOYED_ENV = {k: v for k, v in WORKER_ENV.items() if k != "XLA_FLAGS"}
FAST_XLA_TARGETS = frozenset({"jax", "tf"})
KINDS = ("mismatch", "error", "crash", "timeout")
#: How many batches a fast worker may run ahead of the slowest.
LEAD = 2
#: Graphs per batch. Each compiler's cost per graph falls with the batch up to about this size
#: (16 -> 48 graphs: MindSpore 128 -> 96 ms, jax 44 -> 31, tf 63 -> 48); 96 gained nothing more,
#: and a failing batch costs one bisection step more per doubling.
BATCH = 48


# -- workers -----------------------------------------------------------------------------
@dataclass
class Reply:
    """What a worker run gave: outputs, or the failure kind ("error", "crash", "timeout") and detail."""

    outputs: list[np.ndarray] | None = None
    kind: str = ""
    detail: str = ""


class Worker:
    """One target's worker process: started lazily, restarted after a crash or a hang.

    A (re)started worker first imports its framework and says it is ready; requests are sent
    only then, so a deadline never includes the import.
    """

    def __init__(self, target: str, device: str, inject: str | None, log_dir: Path, startup: float = 180.0,
                 opt: int = 0, env: dict[str, str] = WORKER_ENV):
        self.target, self.device, self.inject, self.opt, self.env = target, device, inject, opt, env
        self.log = log_dir / f"{target}.log"
        self.startup = startup
        self.proc: subprocess.Popen | None = None
        self.is_ready = False
        self.failed: Reply | None = None  # why the last start failed; answers the next result()
        self.restarts = 0
        self.cpu = 0.0  # CPU seconds of earlier processes, after they were ready
        self.cpu_at_ready = 0.0

    def start(self) -> None:
        """Spawn the process if none is running (without waiting for it)."""
        if self.proc is not None:
            return
        cmd = [sys.executable, "-m", "shipei.testing.fuzz", "--worker", self.target, "--device", self.device,
               "--opt", str(self.opt)]
        if self.inject:
            cmd += ["--inject", self.inject]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         env={**os.environ, SCRATCH_ENV: str(self.log.parent), **self.env},
                                         start_new_session=True)
        self.is_ready = False

    def ready(self) -> Reply:
        """Start the worker if needed and wait until its framework is imported."""
        self.start()
        if not self.is_ready:
            reply = self._wait(time.monotonic() + self.startup)
            if reply.kind:
                return reply
            self.is_ready = True
            self.cpu_at_ready = process_cpu(self.proc.pid)
        return Reply(outputs=[])

    def submit(self, graph: Graph, inputs: Sequence[np.ndarray], weights: dict[str, np.ndarray]) -> None:
        started = self.ready()
        if started.kind:
            self.failed = started
            return
        try:
            send(self.proc.stdin, {"graph": graph, "inputs": list(inputs), "weights": weights})
        except OSError:
            pass  # it died; result() reports the crash

    def fileno(self) -> int | None:
        """The reply pipe, for select(); None while no process runs."""
        return self.proc.stdout.fileno() if self.proc is not None else None

    def result(self, timeout: float) -> Reply:
        if self.failed is not None:
            reply, self.failed = self.failed, None
            return reply
        return self._wait(time.monotonic() + timeout)

    def run(self, graph: Graph, inputs: Sequence[np.ndarray], weights: dict[str, np.ndarray], timeout: float) -> Reply:
        self.submit(graph, inputs, weights)
        return self.result(timeout)

    def _wait(self, deadline: float) -> Reply:
        try:
            reply = receive(self.proc.stdout.fileno(), deadline)
        except TimeoutError:
            self.stop()
            return Reply(kind="timeout", detail=f"no answer within the deadline; log tail:\n{self.tail()}")
        except (EOFError, pickle.UnpicklingError, struct.error):
            self.cpu = self.cpu_seconds()
            code = self.proc.wait()
            self.proc = None
            self.restarts += 1
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            return Reply(kind="crash", detail=f"worker {how}; log tail:\n{self.tail()}")
        if "error" in reply:
            return Reply(kind="error", detail=reply["error"])
        return Reply(outputs=reply.get("outputs", []))

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc is not None:
            self.cpu = self.cpu_seconds()
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
            self.restarts += 1

    def cpu_seconds(self) -> float:
        """CPU time the worker processes have spent since they were ready (Linux; else 0)."""
        return self.cpu + (process_cpu(self.proc.pid) - self.cpu_at_ready if self.proc and self.is_ready else 0.0)


def worker_main(target: str, device: str, inject: str | None, opt: int = 0) -> None:
    """A worker's loop: requests on stdin, replies on the original stdout; everything the
    framework prints goes to stderr (the log), so it cannot corrupt the replies."""
    import importlib

    from ..codegen import get_target

    replies = replies_stream()
    names = available_targets() if target == HETERO else [target]  # hetero: every framework, one graph
    if inject:
        where, _, template = inject.partition("=")
        injected_target, _, op = where.partition(":")
        if injected_target in names:
            get_target(injected_target).rules[op] = template
    try:
        for name in names:
            importlib.import_module(get_target(name).framework)
    except Exception as e:  # noqa: BLE001
        send(replies, {"error": f"{type(e).__name__}: {e}"})
        return
    send(replies, {"ready": True})
    while True:
        try:
            request = receive(0, None)
        except EOFError:
            return
        try:
            outputs = run_target(request["graph"], target, request["inputs"], request["weights"], device, opt)
            message: dict[str, Any] = {"outputs": [np.asarray(o) for o in outputs]}
        except Exception as e:  # noqa: BLE001 - the framework's exception is the finding
            message = {"error": f"{type(e).__name__}: {e}"}
        send(replies, message)


# -- cases and batches -------------------------------------------------------------------
@dataclass
class Case:
    """One generated graph with in-range inputs, its weights and reference."""

    seed: int
    graph: Graph
    inputs: list[np.ndarray]
    weights: dict[str, np.ndarray]
    ref: Reference


@dataclass
class Batch:
    """Graphs run together: the cases, those each target lowers, their union per target, and the
    targets still to run it."""

    cases: list[Case]
    runs: dict[str, list[Case]]
    unions: dict[str, tuple]
    left: set[str]


def join(cases: Sequence[Case]) -> tuple[Graph, list[np.ndarray], dict[str, np.ndarray], list[tuple[int, int]]]:
    """The disjoint union of (copies of) the cases' graphs, their inputs and weights, and for
    each output of the union the (case, output) it belongs to."""
    parts = [subgraph(c.graph, c.inputs, c.weights, c.graph.outputs, set(), {}) for c in cases]
    union = disjoint_union([graph for graph, _, _ in parts], "Batch")
    inputs = [a for _, arrays, _ in parts for a in arrays]
    weights = {f"g{k}_{name}": w for k, (_, _, ws) in enumerate(parts) for name, w in ws.items()}
    slots = [(k, j) for k, c in enumerate(cases) for j in range(len(c.graph.outputs))]
    return union, inputs, weights, slots


# -- findings ----------------------------------------------------------------------------
@dataclass
class Finding:
    target: str
    kind: str
    op: str
    path: Path | None
    description: str
    count: int = 1
    deployed_passes: bool = False  # a jax/tf mismatch that XLA's default optimizations do not show


@dataclass
class TargetStats:
    graphs: int = 0
    counts: collections.Counter = field(default_factory=collections.Counter)


@dataclass
class Summary:
    """A fuzz run's results; `table()` is what `shipei fuzz` prints at the end."""

    targets: dict[str, TargetStats]
    ops: collections.Counter
    findings: list[Finding]
    seconds: float
    graphs: int
    skipped: int
    startup: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    out: Path | None = None
    opt: int = 0  # the -O level the targets ran
    not_counted: list[Finding] = field(default_factory=list)  # those with deployed_passes

    @property
    def rate(self) -> float:
        """Graphs per second over the whole run, worker start-up included."""
        return self.graphs / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_graph(self) -> float:
        """CPU seconds (parent and workers, after start-up) per graph: load-independent cost."""
        return sum(self.cpu.values()) / self.graphs if self.graphs else 0.0

    @property
    def steady_rate(self) -> float:
        """Graphs per second once every worker has imported its framework."""
        return self.graphs / (self.seconds - self.startup) if self.seconds > self.startup else 0.0

    def table(self) -> str:
        rows = [("target", "graphs", "mismatches", "errors", "crashes", "timeouts")]
        for name, s in self.targets.items():
            rows.append((name, str(s.graphs), *(str(s.counts[k]) for k in KINDS)))
        lines = _columns(rows)
        total = len(all_ops())
        lines += ["", f"{self.graphs} graphs at -O{self.opt} in {self.seconds:.1f} s ({self.rate:.1f} graphs/s; "
                  f"{self.steady_rate:.1f} after {self.startup:.1f} s of worker start-up), "
                  f"{self.skipped} redrawn for out-of-range or ill-conditioned values; "
                  f"ops covered {len(self.ops)}/{total}{' (as drawn, before the passes)' if self.opt else ''}"]
        if self.cpu and self.graphs:
            lines.append("CPU after start-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.cpu.items())
                         + f"; {self.cpu_per_graph * 1e3:.0f} ms per graph")
        lines.append("")
        names = sorted(all_ops())
        per_column = -(-len(names) // 4)
        columns = [names[i:i + per_column] for i in range(0, len(names), per_column)]
        op_rows = [tuple(x for c in columns for x in ("op", "times"))]
        for i in range(per_column):
            op_rows.append(tuple(x for c in columns for x in ((c[i], str(self.ops[c[i]])) if i < len(c) else ("", ""))))
        lines += _columns(op_rows)
        lines.append("")
        if not self.findings:
            lines.append("no findings")
        for f in self.findings:
            where = f" -> {f.path}" if f.path else ""
            lines.append(f"{f.target} {f.kind} in {f.op or '?'} (seen {f.count}x){where}")
        for f in self.not_counted:
            where = f" -> {f.path}" if f.path else ""
            lines.append(f"not counted: {f.target} {f.kind} in {f.op or '?'} (seen {f.count}x) passes with XLA's "
                         f"default optimizations{where}")
        return "\n".join(lines) + "\n"


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Text columns under a header row; columns of numbers are right-aligned."""
    n = len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    numeric = [all(r[i].isdigit() or not r[i] for r in rows[1:]) for i in range(n)]
    return ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()
            for r in rows]


def _signature(failure: Failure, op: str) -> tuple[str, ...]:
    """Findings with one signature are taken for one bug: only the first is minimized and saved.
    Errors and wrong shapes are told apart by their message (numbers blanked), wrong values by
    the op that computed them."""
    lines = [line.strip() for line in failure.detail.splitlines() if line.strip()] or [""]
    detail = re.sub(r"\d+", "N", re.sub(r"\S*/\S*", "PATH", f"{lines[0]} | {lines[-1]}"))
    if failure.kind == "error" or (failure.kind == "mismatch" and failure.worst is None):
        return (failure.target, failure.kind, detail)
    return (failure.target, failure.kind, op)


# -- the engine --------------------------------------------------------------------------
class Fuzzer:
    """Runs `shipei fuzz`: see the module doc. `run()` returns the `Summary`."""

    def __init__(self, targets: Sequence[str], seconds: float = 60.0, seed: int = 0, max_nodes: int = 10,
                 out: str | os.PathLike | None = "fuzz-out", batch: int = BATCH, timeout: float = 60.0,
                 device: str = "cpu", shrink: bool = True, inject: str | None = None,
                 progress: TextIO | None = sys.stderr, min_nodes: int | None = None,
                 ops: Sequence[str] | None = None, dtypes: Sequence[str] | None = None, opt: int = 0):
        if opt not in range(4):
            raise ShipeiError(f"fuzz: -O{opt} is not a level", hint="levels are 0 to 3")
        self.targets = list(targets)
        self.opt = opt
        self.seconds, self.seed, self.batch, self.timeout = seconds, seed, batch, timeout
        self.device, self.shrink, self.progress, self.inject = device, shrink, progress, inject
        # Graphs use any op x dtype some target lowers; each target runs the graphs it can lower.
        frameworks = dict.fromkeys(n for t in self.targets for n in (available_targets() if t == HETERO else [t]))
        spaces = {t: make_space(ops, dtypes, [t], min_nodes or max(1, max_nodes // 2), max_nodes)
                  for t in frameworks}
        self.lowers = {t: space.dtypes for t, space in spaces.items()}
        table = {op: tuple(d for d in DTYPES if any(d in s.dtypes.get(op, ()) for s in spaces.values()))
                 for op in {op for s in spaces.values() for op in s.dtypes}}
        self.space = dataclasses.replace(next(iter(spaces.values())), dtypes=table)
        self.out = Path(out) if out is not None else None
        self._logs = tempfile.TemporaryDirectory(prefix="shipei-fuzz-logs-")
        self.workers = {t: Worker(t, device, inject, Path(self._logs.name), opt=opt) for t in self.targets}
        self.deployed: dict[str, Worker] = {}  # started for the first jax/tf mismatch to replay
        self.stats = {t: TargetStats() for t in self.targets}
        self.ops: collections.Counter = collections.Counter()
        self.findings: list[Finding] = []
        self.not_counted: list[Finding] = []
        self.seen: dict[tuple[str, ...], Finding] = {}
        self.count = 0
        self.startup = 0.0
        self.drawn = 0
        self.skipped = 0
        self.start = 0.0
        self.last_progress = 0.0

    # -- the loop
    def run(self) -> Summary:
        self.start = time.monotonic()
        try:
            for w in self.workers.values():
                w.start()
            for t, w in self.workers.items():
                reply = w.ready()
                if reply.kind:
                    raise ShipeiError(f"the {t} worker did not start: {reply.detail}")
            self.startup = self.elapsed()
            parent_cpu = time.process_time()
            self.loop()
        finally:
            for w in [*self.workers.values(), *self.deployed.values()]:
                w.stop()
            self._logs.cleanup()
        cpu = {t: w.cpu for t, w in self.workers.items()}
        if self.startup:
            cpu["parent"] = time.process_time() - parent_cpu
        self.show(final=True)
        summary = Summary(self.stats, self.ops, self.findings, self.elapsed(), self.count, self.skipped,
                          self.startup, cpu, self.out, self.opt, self.not_counted)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "summary.txt").write_text(summary.table())
        return summary

    def loop(self) -> None:
        """Hand each idle worker its next batch, without waiting for the slower targets (a worker
        runs at most LEAD batches ahead of the slowest), until time is up and every batch made is done."""
        batches: dict[int, Batch] = {}
        position = dict.fromkeys(self.targets, 0)  # the next batch each target runs
        inflight: dict[str, float] = {}  # target -> deadline
        made = 0
        while True:
            for t in self.targets:
                while t not in inflight:
                    k = position[t]
                    if k == made:
                        if (made and self.fuzzing() >= self.seconds) or k - min(position.values()) >= LEAD:
                            break
                        batches[k] = self.new_batch()
                        made += 1
                    union = batches[k].unions.get(t)
                    if union is None:
                        self.finish(batches, k, t, position)
                        continue
                    self.workers[t].submit(*union[:3])
                    inflight[t] = time.monotonic() + self.timeout
            if not inflight:
                return
            failed = [t for t in inflight if self.workers[t].failed is not None]  # did not even start
            fds = {self.workers[t].fileno(): t for t in inflight if self.workers[t].fileno() is not None}
            wait = 0.0 if failed else max(0.0, min(inflight.values()) - time.monotonic())
            readable = select.select(list(fds), [], [], wait)[0] if fds else []
            now = time.monotonic()
            for t in failed + [fds[fd] for fd in readable] + [t for t, d in inflight.items() if d <= now]:
                if t not in inflight:
                    continue
                reply = self.workers[t].result(inflight.pop(t) - now)
                batch = batches[position[t]]
                self.handle(t, batch.runs[t], batch.unions[t], reply)
                self.finish(batches, position[t], t, position)

    def new_batch(self) -> Batch:
        cases = self.cases()
        runs = {t: [c for c in cases if self.can_lower(t, c.graph)] for t in self.targets}
        return Batch(cases, runs, {t: join(cs) for t, cs in runs.items() if cs}, set(self.targets))

    def finish(self, batches: dict[int, Batch], k: int, target: str, position: dict[str, int]) -> None:
        """`target` is done with batch `k`; a batch every target is done with is counted."""
        position[target] = k + 1
        batch = batches[k]
        batch.left.discard(target)
        if not batch.left:
            del batches[k]
            self.ops.update(n.op for case in batch.cases for n in case.graph.nodes)
            self.count += len(batch.cases)
            self.show()

    def can_lower(self, target: str, graph: Graph) -> bool:
        """Whether `target` lowers every node (HETERO: whether some framework lowers each one)."""
        names = available_targets() if target == HETERO else [target]
        return all(any(all(v.dtype in self.lowers[t].get(n.op, ()) for v in (*n.operands, *n.results))
                       for t in names) for n in graph.nodes)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def fuzzing(self) -> float:
        """Seconds since every worker was ready: what --time limits."""
        return self.elapsed() - self.startup

    def cases(self) -> list[Case]:
        out = []
        while len(out) < self.batch:
            seed = self.seed * 1_000_003 + self.drawn
            self.drawn += 1
            graph = generate(seed, self.space)
            weights = init_params(graph, 0)
            try:
                inputs, ref = sample_inputs(graph, seed, weights)
            except Exception as e:  # noqa: BLE001 - the reference itself failed: a shipei bug
                self.skipped += 1
                self.reference_failure(graph, seed, weights, e)
                continue
            if ref.problem:
                self.skipped += 1
                continue
            out.append(Case(seed, graph, list(inputs), weights, ref))
        return out

    def handle(self, target: str, cases: list[Case], union: tuple, reply: Reply) -> None:
        """Check a batch's reply on `target`; a batch that failed as a whole is bisected."""
        graph, inputs, weights, slots = union
        if reply.outputs is not None:
            self.stats[target].graphs += len(cases)
            per_case: dict[int, list[np.ndarray]] = collections.defaultdict(list)
            for (k, _), out in zip(slots, reply.outputs):
                per_case[k].append(out)
            for k, case in enumerate(cases):
                failure = check_outputs(case.graph, per_case[k], case.ref, target,
                                        lazy_declared(case.graph, case.inputs, case.weights))
                if failure is not None:
                    self.record(target, case, failure)
            return
        if len(cases) == 1:
            self.stats[target].graphs += 1
            self.record(target, cases[0], Failure(target, reply.kind, detail=reply.detail))
            return
        for half in (cases[: len(cases) // 2], cases[len(cases) // 2:]):
            sub = join(half)
            self.handle(target, half, sub, self.workers[target].run(*sub[:3], timeout=self.timeout))

    # -- findings
    def record(self, target: str, case: Case, failure: Failure) -> None:
        self.stats[target].counts[failure.kind] += 1
        self.keep(case.graph, case.inputs, case.weights, case.seed, failure, self.probe(target))

    def reference_failure(self, graph: Graph, seed: int, weights: dict, error: Exception) -> None:
        """The reference interpreter itself raised: a finding against shipei's IR."""
        def probe(g: Graph, inputs, ws) -> Failure | None:
            try:
                reference(g, inputs, ws)
            except Exception as e:  # noqa: BLE001
                return Failure("reference", "error", detail=f"{type(e).__name__}: {e}")
            return None

        failure = Failure("reference", "error", detail=f"{type(error).__name__}: {error}")
        self.keep(graph, list(make_inputs(graph, seed)), weights, seed, failure, probe)

    def keep(self, graph: Graph, inputs: list[np.ndarray], weights: dict, seed: int, failure: Failure,
             probe) -> None:
        """Minimize and save a failure unless one with the same signature is already kept."""
        key = _signature(failure, _failing_op(graph, failure))
        if key in self.seen:
            self.seen[key].count += 1
            return
        steps: list[str] = []
        if self.shrink:
            budget = max(10.0, min(60.0, self.seconds - self.fuzzing() + 10.0))
            small = minimize(graph, inputs, weights, failure, probe, max_seconds=budget)
            graph, inputs, failure, steps = small.graph, small.inputs, small.failure, small.steps
        shrunk = _signature(failure, _failing_op(graph, failure))
        if shrunk in self.seen:
            self.seen[shrunk].count += 1
            self.seen[key] = self.seen[shrunk]
            return
        finding = Finding(failure.target, failure.kind, _failing_op(graph, failure), None, failure.describe(graph))
        finding.deployed_passes = (failure.kind == "mismatch" and failure.target in FAST_XLA_TARGETS
                                   and self.probe(failure.target, self.deployed_worker(failure.target))(
                                       graph, inputs, weights) is None)
        finding.path = self.save(finding, graph, inputs, seed, steps)
        (self.not_counted if finding.deployed_passes else self.findings).append(finding)
        self.seen[key] = self.seen[shrunk] = finding

    def deployed_worker(self, target: str) -> Worker:
        if target not in self.deployed:
            self.deployed[target] = Worker(target, self.device, self.inject, Path(self._logs.name), opt=self.opt,
                                           env=DEPLOYED_ENV)
        return self.deployed[target]

    def probe(self, target: str, worker: Worker | None = None):
        """A probe for `minimize` and the deployed replay: runs `target` in `worker` (the fuzzing one
        by default)."""
        worker = worker or self.workers[target]

        def probe(graph: Graph, inputs, weights) -> Failure | None:
            ref = reference(graph, inputs, weights)
            if ref.problem:
                return None
            reply = worker.run(graph, inputs, weights, self.timeout)
            if reply.outputs is None:
                return Failure(target, reply.kind, detail=reply.detail)
            return check_outputs(graph, reply.outputs, ref, target, lazy_declared(graph, inputs, weights))

        return probe

    def save(self, finding: Finding, graph: Graph, inputs: Sequence[np.ndarray], seed: int,
             steps: list[str]) -> Path | None:
        """Write NNN-target-kind-op.sp/.npz/.txt; returns the .sp path."""
        from ..frontend import elaborate_source
        from ..frontend.unparse import unparse
        from ..ir.printer import print_graph

        if self.out is None:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        parts = [f"{len(self.findings) + len(self.not_counted) + 1:03d}", finding.target, finding.kind, finding.op,
                 f"O{self.opt}" if self.opt else ""]
        stem = "-".join(p for p in parts if p)
        sp, npz, txt = (self.out / f"{stem}{ext}" for ext in (".sp", ".npz", ".txt"))
        try:
            program = unparse(graph)
            exact = print_graph(elaborate_source(program)) == print_graph(graph)
        except ShipeiError as e:
            program, exact = f"# cannot print as DSL: {e.message}\n# IR:\n" + print_graph(graph), False
        sp.write_text(program)
        # numpy cannot store bfloat16; float32 holds its values exactly and `shipei run` casts back.
        np.savez(npz, **{v.name: np.asarray(a).astype(np.float32) if v.dtype is DType.bf16 else np.asarray(a)
                         for v, a in zip(graph.inputs, inputs)})
        target = finding.target if finding.target != "reference" else self.targets[0]
        replay = (f"shipei run {sp} --target {target} --inputs {npz} --check --device {self.device} "
                  f"-O{self.opt}{' --freeze' if self.opt else ''}")
        notes = [finding.description, "", f"replay: {replay}", f"generated from seed {seed}"]
        if finding.deployed_passes:
            notes.append("not counted: it passes with XLA's default optimizations, which the fuzz workers "
                         "leave out to compile faster (so the replay passes too)")
        if steps:
            notes.append("minimized by: " + ", ".join(steps))
        if not exact:
            notes.append("note: the .sp elaborates to a graph that differs from the failing one (see the IR below)")
            notes += ["", print_graph(graph)]
        txt.write_text("\n".join(notes) + "\n")
        return sp

    def show(self, final: bool = False) -> None:
        if self.progress is None:
            return
        now = self.elapsed()
        if not final and now - self.last_progress < 1.0:
            return
        self.last_progress = now
        fails = sum(sum(s.counts.values()) for s in self.stats.values())
        line = (f"[{now:6.1f}s] {self.count} graphs  {self.count / max(now, 1e-9):.1f} graphs/s  "
                f"ops {len(self.ops)}/{len(all_ops())}  failures {fails}")
        end = "\n" if final or not self.progress.isatty() else ""
        self.progress.write(("\r" if self.progress.isatty() else "") + line + end)
        self.progress.flush()


def _failing_op(graph: Graph, failure: Failure) -> str:
    """The op of the failing output's node (for errors, of the last output's), to name a finding."""
    output = graph.outputs[failure.output if failure.output is not None else -1] if graph.outputs else None
    return output.producer.op if output is not None and output.producer is not None else ""


def resolve_targets(spec: str) -> list[str]:
    """`all` (every available target) or a comma-separated list."""
    from ..codegen import TARGETS

    available = available_targets()
    if spec == HETERO:
        return [HETERO]
    if spec == "all":
        if not available:
            raise ShipeiError("no target is available", hint="install a framework: pip install 'shipei[torch]'")
        return available
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        if n not in TARGETS:
            raise ShipeiError(f"unknown target '{n}'", hint=f"targets are {', '.join(TARGETS)}, or all")
        if n not in available:
            raise ShipeiError(f"target '{n}' is not available here (no code generator or framework)")
    return names


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shipei.testing.fuzz")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--inject")
    parser.add_argument("--opt", type=int, default=0)
    args = parser.parse_args(argv)
    worker_main(args.worker, args.device, args.inject, args.opt)


if __name__ == "__main__":
    main()


__all__ = ["Fuzzer", "Summary", "join", "resolve_targets"]
