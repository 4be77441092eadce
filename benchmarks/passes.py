"""What the optimization passes buy on the example models: a markdown table per measure.

Per model (examples/*.sp, weights from seed 0, frozen at -O3 as for deployment):

1. IR nodes before (-O0) and after -O3, fused groups, and activation memory from plan-memory:
   every value in its own buffer (naive) vs the planned buffers, at the `--dims` shapes;
2. compression: stored weight bytes in float32, after int8 quantization and after 50%
   magnitude pruning (sparse encoding), with the output error against the float reference on
   random inputs (max |error| relative to max |output|, and how often the arg-max agrees);
3. inference time of the generated program at -O0 and -O3 on each installed target, measured as
   benchmarks/generated_vs_handwritten.py measures (its helpers are reused): inputs converted to
   framework tensors once, the module's own call path, samples of ~20 ms, median over
   `--repeats`. Each program runs alone in a fresh worker process (pinned to `--threads` cores),
   as a user's process runs it, in `--processes` rounds of -O0, -O3 and a third worker that
   alternates samples of both (steadier when the machine's load drifts, but the two programs
   then share one allocator). The table shows medians over the rounds, the speedup's range over
   the rounds' pairs and each program's minor page faults per call.
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
    plan = o3.passes.options["memory_plan"]
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
    sparse = sum(r.sparse_bytes - r.dense_bytes for r in pruned.passes.options["prune_report"].values())
    q_err, q_top1 = output_error(graph, weights, quantized, inputs)
    p_err, p_top1 = output_error(graph, weights, pruned, inputs)
    full = stored_bytes(weights)
    return (f"| {model} | {full / 1024:,.0f} | {stored_bytes(quantized.weights) / 1024:,.0f} "
            f"({full / stored_bytes(quantized.weights):.1f}x) | {q_err:.2e} | {q_top1:.0%} "
            f"| {(full + sparse) / 1024:,.0f} ({full / (full + sparse):.1f}x) | {p_err:.2e} | {p_top1:.0%} |")


def minor_faults_per_call(call, sync, tensors, calls: int = 20) -> float:
    """Pages the process touched for the first time per call: what -O0's fresh temporaries cost
    when glibc has handed freed memory back to the OS."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        sync(call(*tensors))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def timing(target: str, model: str, dims: dict[str, int] | None, repeats: int, opts: tuple[int, ...],
           warm_allocator: bool = False) -> dict:
    """The timings of one model on one target in this worker process: of one program alone (`opts`
    = (0,) or (3,)), as a user's process runs it, or of -O3 against -O0 in alternating samples.
    The outputs are checked against the numpy reference after timing, unless `warm_allocator`."""
    from shipei.runtime.executable import import_module_file

    baseline = importlib.import_module(f"baselines.{target}_models")
    graph = shipei.parse(EXAMPLES / model)
    inputs = (random_inputs(graph, seed=0, dims=dims) if dims else
              gvh.MODELS[model.removesuffix(".sp")][1](np.random.default_rng(0)))
    if warm_allocator:
        shipei.reference(graph, inputs)
    sides, outputs = [], []
    # The programs' files stay until timing ends: MindSpore's jit reads the source when it compiles.
    with tempfile.TemporaryDirectory(prefix="shipei-passes-") as tmp:
        for opt in opts:
            compiled = shipei.compile(graph, target, opt=opt, freeze=opt > 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = import_module_file(compiled.save(Path(tmp) / f"O{opt}"))  # weights beside it
                loaded = module.load(module.WEIGHTS, "cpu")
            to_tensor, call = gvh.GENERATED[target](module, loaded)
            tensors = [to_tensor(x) for x in inputs]
            outputs.append(baseline.to_numpy(call(*tensors)))
            sides.append((call, baseline.sync, tensors))
        if len(sides) == 1:
            times = [gvh.measure(sides[0], repeats=repeats, sample_s=0.02, warmup=5)["ms"]]
        else:
            t = gvh.compare(*sides, repeats=repeats, sample_s=0.02, warmup=5)
            times = [t["generated_ms"], t["handwritten_ms"]]
        faults = [minor_faults_per_call(*side) for side in sides]
    want = shipei.reference(graph, inputs)[0]
    for opt, got in zip(opts, outputs):
        if not compare(got, want, DType.f32).ok:
            raise AssertionError(f"{model} -O{opt} on {target} does not match the reference")
    return {"inputs": ", ".join(f"{list(np.shape(x))}" for x in inputs),
            **{f"o{opt}_ms": ms for opt, ms in zip(opts, times)},
            **{f"o{opt}_faults": n for opt, n in zip(opts, faults)}}


#: What each round of a row runs, one worker process each: -O0 alone, -O3 alone, both alternating.
ROUND = ((0,), (3,), (3, 0))


def timing_row(target: str, model: str, rounds: list[list[dict]]) -> str:
    """Medians over rounds: each program's time and faults alone, the speedup of those medians
    and its range over the rounds' pairs, and the median speedup of the alternating workers."""
    alone0, alone3, together = zip(*rounds)
    o0, o3, faults0, faults3 = (statistics.median(run[f"o{opt}_{key}"] for run in runs)
                                for key in ("ms", "faults") for opt, runs in ((0, alone0), (3, alone3)))
    pairs = [a["o0_ms"] / b["o3_ms"] for a, b in zip(alone0, alone3)]
    both = statistics.median(run["o0_ms"] / run["o3_ms"] for run in together)
    return (f"| {model} | {target} | {alone0[0]['inputs']} | {o0:.3f} | {o3:.3f} | {o0 / o3:.2f}x "
            f"| {min(pairs):.2f}-{max(pairs):.2f}x | {faults0:,.0f} | {faults3:,.0f} | {both:.2f}x |")


def worker_runs(target: str, model: str, args: argparse.Namespace) -> list[list[dict]] | str:
    """`args.processes` rounds of one row, each worker a fresh process; or why a worker failed."""
    cmd = [sys.executable, __file__, "--worker", target, "--models", model, "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--dims", args.dims] + ["--warm-allocator"] * args.warm_allocator
    rounds = []
    for _ in range(args.processes):
        rounds.append([])
        for opts in ROUND:
            proc = subprocess.run(cmd + ["--opts", ",".join(map(str, opts))], capture_output=True, text=True)
            if proc.returncode:
                return (proc.stderr.strip().splitlines() or ["?"])[-1]
            rounds[-1].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(available_targets()))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--dims", default="", help="shape symbols for timing, e.g. B=1,T=32 (default: "
                        "generated_vs_handwritten's inputs); memory planning uses them too, else B=1,T=32")
    parser.add_argument("--repeats", type=int, default=50, help="interleaved samples per side")
    parser.add_argument("--threads", type=int, default=1, help="cores and intra-op threads per target worker "
                        "(default 1: steadier on a shared machine; 0: the frameworks' defaults)")
    parser.add_argument("--warm-allocator", action="store_true", help="run the numpy reference before timing, "
                        "not after: glibc then keeps freed memory mapped (its large frees raise the trim "
                        "threshold), so a program's temporaries stop costing page faults")
    parser.add_argument("--processes", type=int, default=3, help="rounds of worker processes per model and "
                        "target; the table shows their medians and the speedup's range")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # time one model on one target, print JSON
    parser.add_argument("--opts", default="3,0", help=argparse.SUPPRESS)  # the worker's programs
    args = parser.parse_args()
    dims = {k: int(v) for k, v in (item.split("=") for item in args.dims.split(",") if item)}
    models = args.models.split(",")
    if args.worker:
        if args.threads:
            gvh.limit_threads(args.threads)
            gvh.set_framework_threads(args.worker, args.threads)
        opts = tuple(int(o) for o in args.opts.split(","))
        print(json.dumps(timing(args.worker, args.models, dims, args.repeats, opts, args.warm_allocator)))
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
    print(f"\nInference time, ms per call, each program alone in its own worker process as a user's "
          f"process runs it: median of {args.repeats} samples per process, median over {args.processes} "
          f"processes per program; speedup = -O0 / -O3 of those medians, its range over the rounds' "
          f"pairs; minor page faults per call; and the median speedup with both programs in one "
          f"process, alternating samples ({gvh.machine_note()}; {args.threads or 'default'} thread(s) per "
          f"target{'; allocator warmed by a numpy reference run' if args.warm_allocator else ''}):\n")
    print("| model | target | inputs | -O0 ms | -O3 ms | speedup | speedup range | -O0 faults/call "
          "| -O3 faults/call | speedup in one process |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for target in args.targets.split(","):
        for model in models:
            runs = worker_runs(target, model, args)
            print(timing_row(target, model, runs) if isinstance(runs, list) else
                  f"| {model} | {target} failed: {runs} |", flush=True)


if __name__ == "__main__":
    main()
