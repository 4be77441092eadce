"""What the optimization passes buy on the example models: a markdown table per measure.

Per model (examples/*.sp, weights from seed 0, frozen at -O3 as for deployment):

1. IR nodes before (-O0) and after -O3, fused groups, and activation memory from plan-memory:
   every value in its own buffer (naive) vs the planned buffers, at the `--dims` shapes;
2. compression: stored weight bytes in float32, after int8 quantization and after 50%
   magnitude pruning (sparse encoding), with the output error against the float reference on
   random inputs (max |error| relative to max |output|, and how often the arg-max agrees);
3. inference time of the generated program at -O0 and -O3 on each installed target, measured as
   benchmarks/generated_vs_handwritten.py measures (its helpers are reused): inputs converted to
   framework tensors once, the module's own call path, samples of ~20 ms alternating -O0/-O3,
   median over `--repeats`, each model and target in `--processes` fresh worker processes
   (pinned to `--threads` cores), with the medians over those processes and the speedup's range.
   The inputs are that benchmark's (mlp B=64, cnn B=16, transformer B=8 T=64) or `--dims`.
   Outputs are checked against the numpy reference after timing: run first, its large freed
   arrays leave glibc's allocator holding freed memory, which spares -O0's many temporaries their
   page faults (`--warm-allocator` measures that state). Which state a fresh process starts in
   varies, so the table also counts each side's minor page faults per call.

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


def timing(target: str, model: str, dims: dict[str, int] | None, repeats: int, warm_allocator: bool = False) -> dict:
    """The timings of one model on one target, -O3 against -O0, in a worker process of its own: a
    process's allocator remembers what ran before, and that moves -O0's time more than -O3's. The
    outputs are checked against the numpy reference after timing, unless `warm_allocator`."""
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
        for opt in (3, 0):
            compiled = shipei.compile(graph, target, opt=opt, freeze=opt > 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = import_module_file(compiled.save(Path(tmp) / f"O{opt}"))  # weights beside it
                loaded = module.load(module.WEIGHTS, "cpu")
            to_tensor, call = gvh.GENERATED[target](module, loaded)
            tensors = [to_tensor(x) for x in inputs]
            outputs.append(baseline.to_numpy(call(*tensors)))
            sides.append((call, baseline.sync, tensors))
        t = gvh.compare(*sides, repeats=repeats, sample_s=0.02, warmup=5)
        faults = [minor_faults_per_call(*side) for side in sides]
    want = shipei.reference(graph, inputs)[0]
    for opt, got in zip((3, 0), outputs):
        if not compare(got, want, DType.f32).ok:
            raise AssertionError(f"{model} -O{opt} on {target} does not match the reference")
    return {"inputs": ", ".join(f"{list(np.shape(x))}" for x in inputs),
            "o0_ms": t["handwritten_ms"], "o3_ms": t["generated_ms"], "speedup": 1 / t["ratio"],
            "pair_speedup": 1 / t["pair_ratio"], "cpu_speedup": 1 / t["cpu_ratio"],
            "o0_faults": faults[1], "o3_faults": faults[0]}


def timing_row(target: str, model: str, runs: list[dict]) -> str:
    """Medians over worker processes, and the range of the speedup: each process starts its
    allocator in a state of its own, which moves -O0 by up to 2x."""
    med = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "inputs"}
    low, high = min(run["speedup"] for run in runs), max(run["speedup"] for run in runs)
    return (f"| {model} | {target} | {runs[0]['inputs']} | {med['o0_ms']:.3f} | {med['o3_ms']:.3f} "
            f"| {med['speedup']:.2f}x | {low:.2f}-{high:.2f}x | {med['pair_speedup']:.2f}x "
            f"| {med['cpu_speedup']:.2f}x | {med['o0_faults']:,.0f} | {med['o3_faults']:,.0f} |")


def worker_runs(target: str, model: str, args: argparse.Namespace) -> list[dict] | str:
    """`args.processes` timings of one row, each in a fresh worker; or why a worker failed."""
    cmd = [sys.executable, __file__, "--worker", target, "--models", model, "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--dims", args.dims] + ["--warm-allocator"] * args.warm_allocator
    runs = []
    for _ in range(args.processes):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            return (proc.stderr.strip().splitlines() or ["?"])[-1]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


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
    parser.add_argument("--processes", type=int, default=3, help="worker processes per model and target; "
                        "the table shows their medians and the speedup's range")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # time one model on one target, print JSON
    args = parser.parse_args()
    dims = {k: int(v) for k, v in (item.split("=") for item in args.dims.split(",") if item)}
    models = args.models.split(",")
    if args.worker:
        if args.threads:
            gvh.limit_threads(args.threads)
            gvh.set_framework_threads(args.worker, args.threads)
        print(json.dumps(timing(args.worker, args.models, dims, args.repeats, args.warm_allocator)))
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
    print(f"\nInference time, ms per call: median of {args.repeats} alternating samples in each of "
          f"{args.processes} worker processes, median over the processes; speedup = -O0 / -O3 "
          f"by median wall time, by the median of per-pair ratios, and by median CPU time "
          f"({gvh.machine_note()}; {args.threads or 'default'} thread(s) per target"
          f"{'; allocator warmed by a numpy reference run' if args.warm_allocator else ''}):\n")
    print("| model | target | inputs | -O0 ms | -O3 ms | speedup | speedup range | pair speedup | CPU speedup "
          "| -O0 faults/call | -O3 faults/call |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for target in args.targets.split(","):
        for model in models:
            runs = worker_runs(target, model, args)
            print(timing_row(target, model, runs) if isinstance(runs, list) else
                  f"| {model} | {target} failed: {runs} |", flush=True)


if __name__ == "__main__":
    main()
