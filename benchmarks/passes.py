"""What the optimization passes buy on the example models: a markdown table per measure.

Per model (examples/*.sp, weights from seed 0, frozen at -O3 as for deployment):

1. IR nodes before (-O0) and after -O3, fused groups, and activation memory from plan-memory:
   every value in its own buffer (naive) vs the planned buffers, at the `--dims` shapes;
2. compression: stored weight bytes in float32, after int8 quantization and after 50%
   magnitude pruning (sparse encoding), with the output error against the float reference on
   random inputs (max |error| relative to max |output|, and how often the arg-max agrees);
3. inference time of the generated program at -O0 and -O3 on each installed target, measured as
   benchmarks/generated_vs_handwritten.py measures (its helpers are reused): inputs converted to
   framework tensors once, the module's own call path, samples of `--sample-ms`, median over
   `--repeats`. Each program runs in a worker process of its own (pinned to `--threads` cores),
   as a user's process runs it, and the parent alternates samples between the two workers, so
   that drift in the machine's load meets both; `--processes` rounds of fresh workers. The table
   shows medians over the rounds, the speedup's range over them and each program's minor page
   faults per call: a process's allocator state, which the two programs must not share, moves
   -O0's time by up to 1.6x.
   The inputs are that benchmark's (mlp B=64, cnn B=16, transformer B=8 T=64) or `--dims`.
   Outputs are checked against the numpy reference after timing: run first, its large freed
   arrays leave glibc's allocator holding freed memory, which spares -O0's many temporaries their
   page faults (`--warm-allocator` measures that state).

    python benchmarks/passes.py                                  # everything
    python benchmarks/passes.py --targets torch --dims B=1,T=32  # torch only, small inputs
    python benchmarks/passes.py --warm-allocator                 # timings after a numpy reference run
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from shipei.ir.graph import Graph
from shipei.ir.init import init_params
from shipei.ir.inputs import random_inputs
from shipei.ir.interpreter import interpret
from shipei.ir.passes.manager import pipeline
from shipei.ir.tolerance import compare
from shipei.ir.types import DType

import shipei
from shipei.testing import available_targets

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generated_vs_handwritten as gvh  # noqa: E402 - its measurement helpers and inputs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODELS = ("mlp.sp", "cnn.sp", "transformer.sp")


def stored_bytes(weights: dict[str, np.ndarray]) -> int:
    return sum(np.asarray(w).nbytes for w in weights.values())


def output_error(graph: Graph, weights: dict, compressed: shipei.Compiled, inputs: list) -> tuple[float, float]:
    """(max |error| / max |reference|, arg-max agreement) of a compressed model vs the float one."""
    want = interpret(graph, inputs, weights)[0]
    got = interpret(compressed.ir, inputs, compressed.weights)[0]
    scale = float(np.abs(want).max()) or 1.0
    return float(np.abs(got - want).max()) / scale, float(np.mean(got.argmax(-1) == want.argmax(-1)))


def structure(model: str, dims: dict[str, int]) -> str:
    graph = shipei.parse(EXAMPLES / model)
    o3 = shipei.compile(graph, "torch", opt=3, freeze=True, pass_options={"dims": dims})
    plan = o3.passes.results.memory_plan
    groups = len(o3.ir.groups())
    return (f"| {model} | {len(graph.nodes)} | {len(o3.ir.nodes)} | {groups} | {plan.naive_bytes / 1024:,.0f} "
            f"| {plan.planned_bytes / 1024:,.0f} | {plan.ratio:.2f}x |")


def compression(model: str, dims: dict[str, int]) -> str:
    graph = shipei.parse(EXAMPLES / model)
    weights = init_params(graph)
    inputs = random_inputs(graph, seed=1, dims={"B": 64, "T": dims.get("T", 16)})
    quantized = shipei.compile(graph, "torch", passes=pipeline(2) + ["quantize", "dce"], freeze=True,
                               weights=weights)
    pruned = shipei.compile(graph, "torch", passes=["prune"], freeze=True, weights=weights,
                            pass_options={"sparsity": 0.5})
    sparse = sum(r.sparse_bytes - r.dense_bytes for r in pruned.passes.results.prune_report.values())
    q_err, q_top1 = output_error(graph, weights, quantized, inputs)
    p_err, p_top1 = output_error(graph, weights, pruned, inputs)
    full = stored_bytes(weights)
    return (f"| {model} | {full / 1024:,.0f} | {stored_bytes(quantized.weights) / 1024:,.0f} "
            f"({full / stored_bytes(quantized.weights):.1f}x) | {q_err:.2e} | {q_top1:.0%} "
            f"| {(full + sparse) / 1024:,.0f} ({full / (full + sparse):.1f}x) | {p_err:.2e} | {p_top1:.0%} |")


def minor_faults_per_call(call, sync, tensors, calls: int = 20) -> float:
    """Pages the process touched for the first time per call: what fresh temporaries cost when
    glibc has handed freed memory back to the OS."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        sync(call(*tensors))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def serve(target: str, model: str, opt: int, dims: dict[str, int] | None, warm_allocator: bool) -> None:
    """A worker: load one program, then answer the parent on stdin/stdout. `N` runs N calls and
    prints their mean wall seconds; `faults` prints minor page faults per call; end of input
    checks the output against the numpy reference (skipped with `warm_allocator`, which runs
    the reference before anything else instead)."""
    from shipei.runtime.executable import import_module_file

    baseline = importlib.import_module(f"baselines.{target}_models")
    graph = shipei.parse(EXAMPLES / model)
    inputs = (random_inputs(graph, seed=0, dims=dims) if dims else
              gvh.MODELS[model.removesuffix(".sp")][1](np.random.default_rng(0)))
    if warm_allocator:
        shipei.reference(graph, inputs)
    # The program's files stay while it runs: MindSpore's jit reads the source when it compiles.
    with tempfile.TemporaryDirectory(prefix="shipei-passes-") as tmp:
        compiled = shipei.compile(graph, target, opt=opt, freeze=opt > 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = import_module_file(compiled.save(Path(tmp) / f"O{opt}"))  # weights beside it
            loaded = module.load(module.WEIGHTS, "cpu")
        to_tensor, call = gvh.GENERATED[target](module, loaded)
        tensors = [to_tensor(x) for x in inputs]
        got = baseline.to_numpy(call(*tensors))
        print(json.dumps({"inputs": ", ".join(f"{list(np.shape(x))}" for x in inputs)}), flush=True)
        gc.collect()
        gc.disable()  # as gvh.compare does: no collection inside a sample
        for line in sys.stdin:
            if line.strip() == "faults":
                print(minor_faults_per_call(call, baseline.sync, tensors), flush=True)
            else:
                print(gvh.sample(call, baseline.sync, tensors, int(line))[0], flush=True)
    if not warm_allocator and not compare(got, shipei.reference(graph, inputs)[0], DType.f32).ok:
        raise SystemExit(f"{model} -O{opt} on {target} does not match the reference")


class Worker:
    """A `serve` process: one program in a process of its own, as a user's process runs it. Its
    stderr goes to a file, which frameworks' start-up logs cannot fill as they can a pipe."""

    def __init__(self, target: str, model: str, opt: int, args: argparse.Namespace):
        cmd = [sys.executable, __file__, "--worker", target, "--models", model, "--opt", str(opt),
               "--threads", str(args.threads), "--dims", args.dims] + ["--warm-allocator"] * args.warm_allocator
        self.log = tempfile.TemporaryFile("w+")
        self.failure: str | None = None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.ready = self._reply(json.loads)

    def ask(self, line: str) -> float:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply(float)

    def close(self) -> str | None:
        """End the worker (once); its last words if it failed (a mismatch, a crash)."""
        if not self.log.closed:
            try:
                self.proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
            self.log.seek(0)
            words = (self.log.read().strip().splitlines() or ["worker failed"])[-1]
            self.log.close()
            self.failure = words if self.proc.returncode else None
        return self.failure

    def _reply(self, parse):
        """The worker's next answer; lines a framework printed to stdout in between are skipped."""
        while line := self.proc.stdout.readline():
            try:
                return parse(line)
            except ValueError:
                continue
        raise RuntimeError(self.close() or "worker ended early")


def timing_round(target: str, model: str, args: argparse.Namespace) -> dict:
    """-O0 and -O3 each in a worker process of its own, sampled alternately (so that drift in
    the machine's load meets both): medians of `args.repeats` samples of `args.sample_ms` each."""
    workers: dict[int, Worker] = {}
    try:
        for opt in (0, 3):
            workers[opt] = Worker(target, model, opt, args)
        for w in workers.values():
            w.ask("5")  # warm-up
        probe = max(statistics.median(w.ask("1") for _ in range(11)) for w in workers.values())
        number = max(1, round(args.sample_ms / 1e3 / max(probe, 1e-6)))
        samples: dict[int, list[float]] = {0: [], 3: []}
        for r in range(args.repeats):
            for opt in ((0, 3) if r % 2 == 0 else (3, 0)):
                samples[opt].append(workers[opt].ask(str(number)))
        faults = {opt: w.ask("faults") for opt, w in workers.items()}
    finally:
        failures = [e for e in (w.close() for w in workers.values()) if e]
        if failures:
            raise RuntimeError(failures[0])  # the worker's reason, not the parent's symptom
    ms = {opt: statistics.median(s) * 1e3 for opt, s in samples.items()}
    return {"inputs": workers[0].ready["inputs"], "o0_ms": ms[0], "o3_ms": ms[3],
            "pair_speedup": statistics.median(a / b for a, b in zip(samples[0], samples[3])),
            "o0_faults": faults[0], "o3_faults": faults[3]}


def timing_row(target: str, model: str, rounds: list[dict]) -> str:
    """Medians over rounds, the range of the speedup over them, and the median per-pair speedup."""
    med = {key: statistics.median(run[key] for run in rounds) for key in rounds[0] if key != "inputs"}
    speedups = [run["o0_ms"] / run["o3_ms"] for run in rounds]
    return (f"| {model} | {target} | {rounds[0]['inputs']} | {med['o0_ms']:.3f} | {med['o3_ms']:.3f} "
            f"| {med['o0_ms'] / med['o3_ms']:.2f}x | {min(speedups):.2f}-{max(speedups):.2f}x "
            f"| {med['pair_speedup']:.2f}x | {med['o0_faults']:,.0f} | {med['o3_faults']:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(available_targets()))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--dims", default="", help="shape symbols for timing, e.g. B=1,T=32 (default: "
                        "generated_vs_handwritten's inputs); memory planning uses them too, else B=1,T=32")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved samples per side")
    parser.add_argument("--sample-ms", type=float, default=100, help="length of a sample: long enough that "
                        "refilling the caches after the other worker's sample does not count")
    parser.add_argument("--threads", type=int, default=1, help="cores and intra-op threads per target worker "
                        "(default 1: steadier on a shared machine; 0: the frameworks' defaults)")
    parser.add_argument("--warm-allocator", action="store_true", help="run the numpy reference before timing, "
                        "not after: glibc then keeps freed memory mapped (its large frees raise the trim "
                        "threshold), so a program's temporaries stop costing page faults")
    parser.add_argument("--processes", type=int, default=3, help="rounds per model and target, each with a "
                        "fresh worker process per program; the table shows their medians and the speedup's range")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # serve one program of one model on this target
    parser.add_argument("--opt", type=int, default=0, help=argparse.SUPPRESS)  # the worker's program
    args = parser.parse_args()
    dims = {k: int(v) for k, v in (item.split("=") for item in args.dims.split(",") if item)}
    models = args.models.split(",")
    unknown = [m for m in models if not (EXAMPLES / m).is_file()]
    if unknown:
        examples = ", ".join(sorted(p.name for p in EXAMPLES.glob("*.sp")))
        parser.error(f"no example {', '.join(unknown)}; examples: {examples}")
    if args.worker:
        if args.threads:
            gvh.limit_threads(args.threads, [args.worker])
            gvh.set_framework_threads(args.worker, args.threads)
        serve(args.worker, args.models, args.opt, dims, args.warm_allocator)
        return
    plan_dims = dims or {"B": 1, "T": 32}
    print(f"IR and activation memory at {plan_dims} (-O3, frozen weights):\n")
    print("| model | nodes -O0 | nodes -O3 | fused groups | activations naive KiB | planned KiB | planned/naive |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for model in models:
        print(structure(model, plan_dims))
    print("\nCompression (int8: per-channel symmetric weights; prune: 50% unstructured, bitmap + values):\n")
    print("| model | f32 KiB | int8 KiB | int8 rel. error | int8 top-1 agree | pruned KiB | pruned rel. error "
          "| pruned top-1 agree |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in models:
        print(compression(model, plan_dims))
    print(f"\nInference time, ms per call, each program in a worker process of its own as a user's process "
          f"runs it, samples alternating between the two: median of {args.repeats} samples, median over "
          f"{args.processes} rounds of fresh workers; speedup = -O0 / -O3 of those medians, its range over "
          f"the rounds, the median per-pair speedup, and minor page faults per call "
          f"({gvh.machine_note()}; {args.threads or 'default'} thread(s) per target"
          f"{'; allocator warmed by a numpy reference run' if args.warm_allocator else ''}):\n")
    print("| model | target | inputs | -O0 ms | -O3 ms | speedup | speedup range | pair speedup "
          "| -O0 faults/call | -O3 faults/call |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for target in args.targets.split(","):
        for model in models:
            try:
                row = timing_row(target, model, [timing_round(target, model, args) for _ in range(args.processes)])
            except RuntimeError as e:
                row = f"| {model} | {target} failed: {e} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
