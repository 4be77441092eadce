"""Inference time of shipei's generated programs against hand-written ones in the same framework.

For examples/{mlp,cnn,transformer}.sp (B=64; B=16; B=8, T=64) and every target, the generated
program (`shipei.compile`, then the generated module's own `load`) runs beside an idiomatic
hand-written program in the same framework (benchmarks/baselines/<target>_models.py: torch
nn.Modules in eval mode under inference_mode with F.scaled_dot_product_attention; jax pure
functions under jax.jit, NHWC convolutions; tf.Module + tf.function(jit_compile=True), NHWC;
MindSpore nn.Cells under ms.jit). The weights (compile's seed-0 weights, PyTorch names) are
written once per run to one .safetensors file per model, and both programs load that file. Before
timing, both outputs are checked against shipei's numpy reference (f64) at f32 tolerance
(rtol 1e-4, atol 1e-5): a hand-written program that fails skips the row; a generated one that
fails is reported under the table.

Timing: inputs are converted to the framework's CPU tensors once; a call is "model(*inputs),
then block until the result is ready" on both sides. The generated side uses the generated
module's own call path: the torch nn.Module under inference_mode, the jitted
`forward(params, ...)` inside the `jax.enable_x64` scope the module's `run` uses, the tf.Module's
compiled `__call__`, the Cell. After warm-up (jit compilation), generated and hand-written
samples alternate (GH, HG, GH, ...); a sample is the mean of enough calls for ~20 ms, and the
table shows the median over the repeats; ratio = generated / hand-written, goal <= 1.05. Under the
table: the median of per-pair ratios (steadier when the load drifts) and the ratio of median
process CPU times (what the programs computed, without time spent waiting for a core).

Each target runs in a worker process of its own, so thread pools and process-wide flags
(XLA_FLAGS) do not leak between targets and one failing target does not stop the others. A
target is skipped, with the reason printed, when its codegen module does not exist yet, `emit`
raises for it, its framework is not installed or its generated program fails to load.
`--threads N` pins each worker to N cores with N intra-op threads in every framework: on a
machine that other jobs load, PyTorch's default 2-thread pool can wait milliseconds per op for
its second thread, which swamps what is being compared; `--threads 1` gives steady numbers.

    python benchmarks/generated_vs_handwritten.py                 # all models, all targets
    python benchmarks/generated_vs_handwritten.py --threads 1     # steadier on a loaded machine
    python benchmarks/generated_vs_handwritten.py --targets torch jax --models cnn --repeats 100 --opt 3
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
from shipei.ir.passes.manager import DEFAULT_OPT

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # for `baselines`

#: model -> (example file, input builder). Batch sizes from issue 3.
MODELS = {
    "mlp": ("mlp.sp", lambda rng: [rng.standard_normal((64, 784)).astype(np.float32)]),
    "cnn": ("cnn.sp", lambda rng: [rng.standard_normal((16, 3, 32, 32)).astype(np.float32)]),
    "transformer": ("transformer.sp", lambda rng: [rng.integers(0, 512, (8, 64)).astype(np.int64)]),
}
TARGETS = ("torch", "jax", "tf", "mindspore")
RTOL, ATOL = 1e-4, 1e-5
GOAL = 1.05


# --- per-target glue: how to feed and call the GENERATED program with framework tensors ------------


def _generated_torch(module, model):
    """The program's own `call`: on CPU, the oneDNN graph it traces (`onednn_graph`), as `run` does."""
    import torch

    def call(*inputs):
        return module.call(model, *inputs)[0]

    return (lambda x: torch.from_numpy(x.copy())), call


def _generated_jax(module, params):
    import jax

    def to_tensor(x):
        with jax.enable_x64(True):  # as the module's run(): 64-bit inputs stay 64-bit
            return jax.device_put(x, jax.devices("cpu")[0])

    def call(*inputs):
        with jax.enable_x64(True):
            return module.forward(params, *inputs)

    return to_tensor, call


def _generated_tf(module, model):
    import tensorflow as tf

    def to_tensor(x):
        with tf.device("/CPU:0"):
            return tf.convert_to_tensor(x)

    return to_tensor, model


def _generated_mindspore(module, model):
    import mindspore as ms

    return (lambda x: ms.Tensor(np.asarray(x, order="C"))), model


GENERATED = {"torch": _generated_torch, "jax": _generated_jax, "tf": _generated_tf,
             "mindspore": _generated_mindspore}


# --- measurement ---------------------------------------------------------------------------------------


def sample(fn, sync, inputs, number: int) -> tuple[float, float]:
    """(wall s, process CPU s) per call, averaged over `number` calls, each blocked until its
    result is ready."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(number):
        sync(fn(*inputs))
    return (time.perf_counter() - t0) / number, (time.process_time() - c0) / number


def compare(gen, base, repeats: int, sample_s: float, warmup: int) -> dict:
    """Medians over `repeats` interleaved samples of each side. `gen`/`base` are (fn, sync, inputs).

    Returns generated/hand-written wall seconds, the median of per-pair wall ratios (steadier
    when the machine's load drifts), the ratio of median process CPU times (all threads; on a
    pinned worker, the time it actually ran, without the time it waited for a core) and the
    calls per sample."""
    for _ in range(warmup):
        sample(*gen, 1)
        sample(*base, 1)
    probe = max(statistics.median(sample(*gen, 1)[0] for _ in range(11)),
                statistics.median(sample(*base, 1)[0] for _ in range(11)))
    number = max(1, math.ceil(sample_s / max(probe, 1e-6)))
    g, h = [], []
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            if r % 2 == 0:
                g.append(sample(*gen, number))
                h.append(sample(*base, number))
            else:
                h.append(sample(*base, number))
                g.append(sample(*gen, number))
    finally:
        gc.enable()
    wall_g, wall_h = statistics.median(a for a, _ in g), statistics.median(a for a, _ in h)
    return {"generated_ms": wall_g * 1e3, "handwritten_ms": wall_h * 1e3, "ratio": wall_g / wall_h,
            "pair_ratio": statistics.median(a[0] / b[0] for a, b in zip(g, h)),
            "cpu_ratio": statistics.median(a for _, a in g) / statistics.median(b for _, b in h),
            "calls_per_sample": number}


def _check(name: str, got: np.ndarray, want: np.ndarray) -> str | None:
    """None when close at f32 tolerance, else a description of the worst mismatch."""
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape}, reference {want.shape}"
    if np.allclose(got, want, rtol=RTOL, atol=ATOL):
        return None
    err = np.abs(got - want)
    i = np.unravel_index(np.argmax(err - RTOL * np.abs(want)), err.shape)
    return (f"{name}: not close to the reference at rtol={RTOL}, atol={ATOL}: max abs err {err.max():.3g}, "
            f"max rel err {(err / np.maximum(np.abs(want), 1e-30)).max():.3g}, worst at {i}: "
            f"{got[i]!r} vs {want[i]!r}")


def threads_note(target: str) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores; " + _threads_note(target)


def _threads_note(target: str) -> str:
    if target == "torch":
        import torch
        return f"torch intra-op threads {torch.get_num_threads()}"
    if target == "jax":
        import jax
        return f"jax {jax.__version__}, XLA:CPU, devices {len(jax.devices('cpu'))}"
    if target == "tf":
        import tensorflow as tf
        intra = tf.config.threading.get_intra_op_parallelism_threads() or "default"
        return f"tf {tf.__version__} intra-op threads {intra}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '').strip()!r}"
    if target == "mindspore":
        import mindspore as ms
        return f"mindspore {ms.__version__}, runtime threads {ms.get_context('runtime_num_threads')}"
    return ""


def limit_threads(n: int, targets: list[str] | tuple[str, ...] = ()) -> None:
    """Run this (worker) process on `n` cores with `n` intra-op threads in every framework.

    Call before any framework is imported. The CPU affinity is what bounds XLA's thread pools
    (jax and tf size them from the schedulable CPUs); the rest are the frameworks' own knobs.
    A worker for MindSpore gets a core for its runtime besides (`shipei.measuring.worker_cores`).
    """
    from shipei.measuring import worker_cores

    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:max((worker_cores(n, t) for t in targets), default=n)]
        os.sched_setaffinity(0, cores)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


def set_framework_threads(target: str, n: int) -> None:
    if target == "torch":
        import torch
        torch.set_num_threads(n)
    elif target == "tf":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    elif target == "mindspore":
        import mindspore as ms
        ms.set_context(runtime_num_threads=max(n, 1))


def write_weights(models: list[str], directory: Path) -> None:
    """<directory>/<model>.safetensors: the weights `shipei.compile(example, target)` starts from
    (seed 0; the same for every target), by shipei's PyTorch-style names. Written once per run;
    every generated and hand-written program reads its model's file."""
    import safetensors.numpy
    from shipei.ir.init import init_params

    import shipei

    for model in models:
        graph = shipei.parse(ROOT / "examples" / MODELS[model][0])
        # np.asarray(order="C"), not np.ascontiguousarray, which makes a 0-d array 1-d
        safetensors.numpy.save_file({k: np.asarray(v, order="C") for k, v in init_params(graph, 0).items()},
                                    str(directory / f"{model}.safetensors"))


def run_target(target: str, models: list[str], weights_dir: Path, repeats: int, sample_s: float, warmup: int,
               opt: int = DEFAULT_OPT) -> list[dict]:
    """Every model on one target, in this process. Rows are dicts; a skipped row has 'skip'."""
    from shipei.codegen import get_target

    try:
        framework = get_target(target).framework
    except Exception as exc:  # noqa: BLE001 - the target's codegen module is missing or broken
        return [{"model": m, "target": target, "skip": f"no codegen for '{target}' yet ({type(exc).__name__}: {exc})"}
                for m in models]
    if importlib.util.find_spec(framework) is None:
        return [{"model": m, "target": target, "skip": f"{framework} is not installed"} for m in models]
    with tempfile.TemporaryDirectory(prefix=f"shipei-bench-{target}-") as tmp:
        return [run_model(target, m, weights_dir, Path(tmp), repeats, sample_s, warmup, opt) for m in models]


def run_model(target: str, model: str, weights_dir: Path, tmp: Path, repeats: int, sample_s: float, warmup: int,
              opt: int = DEFAULT_OPT) -> dict:
    """One row: both programs checked against the reference, then timed side by side."""
    import safetensors.numpy
    from shipei.runtime.executable import import_module_file

    import shipei

    def skip(reason: str) -> dict:
        return {"model": model, "target": target, "skip": reason}

    filename, make_inputs = MODELS[model]
    example = ROOT / "examples" / filename
    weights = weights_dir / f"{model}.safetensors"
    arrays = safetensors.numpy.load_file(str(weights))
    try:
        compiled = shipei.compile(example, target, opt=opt)
    except Exception as exc:  # noqa: BLE001 - emit raised: the target cannot lower this model (yet)
        return skip(f"shipei.compile raised {type(exc).__name__}: {exc}")
    if set(compiled.weights) != set(arrays):
        return skip(f"the compiled model's params differ from {weights.name}: "
                    f"{sorted(set(compiled.weights) ^ set(arrays))}")
    inputs = make_inputs(np.random.default_rng(0))
    # The oracle: the numpy reference (f64) on the model as written, before any pass.
    want = shipei.reference(shipei.parse(example), inputs, arrays)[0]

    # The generated program, loaded by its own `load` from the shared weights file.
    try:
        path = compiled.save(tmp / f"{model}_{target}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = import_module_file(path)
            gen_model = module.load(str(weights), "cpu")
            gen_out = module.run(gen_model, inputs, "cpu")[0]
        gen_to_tensor, gen_fn = GENERATED[target](module, gen_model)
        gen_inputs = [gen_to_tensor(x) for x in inputs]
    except Exception as exc:  # noqa: BLE001
        return skip(f"generated program failed to load/run: {type(exc).__name__}: {exc}")

    # The hand-written program, from the same file.
    try:
        baseline = importlib.import_module(f"baselines.{target}_models")
        base_fn = baseline.build(model, str(weights))
        base_inputs = [baseline.to_tensor(x) for x in inputs]
        base_out = baseline.to_numpy(base_fn(*base_inputs))
    except Exception as exc:  # noqa: BLE001
        return skip(f"hand-written baseline failed: {type(exc).__name__}: {exc}")

    base_problem = _check("hand-written", base_out, want)
    if base_problem:
        return skip(base_problem)
    problems = [p for p in (_check("generated", gen_out, want),
                            _check("generated (direct call)", baseline.to_numpy(gen_fn(*gen_inputs)), want)) if p]
    timing = compare((gen_fn, baseline.sync, gen_inputs), (base_fn, baseline.sync, base_inputs),
                     repeats, sample_s, warmup)
    return {"model": model, "target": target, **timing, "repeats": repeats, "problems": problems,
            "threads": threads_note(target)}


def machine_note() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, "
            f"load average {load:.2f} at start")


def table(rows: list[dict], goal: float = GOAL, heads: tuple[str, str] = ("generated ms", "hand-written ms")) -> str:
    """The timed rows as a markdown table, a ratio over `goal` marked."""
    lines = [f"| model | target | {heads[0]} | {heads[1]} | ratio |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if "skip" in r:
            continue
        flag = "" if r["ratio"] <= goal else " ✗"
        lines.append(f"| {r['model']} | {r['target']} | {r['generated_ms']:.3f} | {r['handwritten_ms']:.3f} "
                     f"| {r['ratio']:.2f}{flag} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--repeats", type=int, default=50, help="interleaved samples per side (>= 30)")
    parser.add_argument("--sample-ms", type=float, default=20.0, help="aim for samples this long")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per side after compiling")
    parser.add_argument("--opt", type=int, default=DEFAULT_OPT, choices=range(4),
                        help=f"shipei.compile's -O level (default {DEFAULT_OPT}, compile's own default; "
                             "weights are not frozen)")
    parser.add_argument("--threads", type=int, default=0,
                        help="pin each target's worker to this many cores and intra-op threads, for steadier "
                             "numbers on a loaded machine (default 0: the frameworks' own defaults)")
    parser.add_argument("--in-process", action="store_true", help="run targets in this process")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a worker's output
    parser.add_argument("--weights-dir", type=Path, help=argparse.SUPPRESS)  # the parent's weight files
    args = parser.parse_args()
    if args.repeats < 30:
        parser.error("--repeats must be at least 30")

    if args.json:  # worker: one target, rows as JSON on the last line
        if args.threads:
            limit_threads(args.threads, args.targets)
        rows = []
        for target in args.targets:
            try:
                if args.threads:
                    set_framework_threads(target, args.threads)
                rows += run_target(target, args.models, args.weights_dir, args.repeats, args.sample_ms / 1e3,
                                   args.warmup, args.opt)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                rows += [{"model": m, "target": target, "skip": f"benchmark failed: {type(exc).__name__}: {exc}"}
                         for m in args.models]
        print("\nROWS " + json.dumps(rows))
        return

    if args.in_process and args.threads:
        parser.error("--threads needs the per-target worker processes (drop --in-process)")
    print(f"machine: {machine_note()}; threads: "
          + (f"{args.threads} per target (pinned)" if args.threads else "framework defaults")
          + f"; shipei -O{args.opt}", flush=True)
    with tempfile.TemporaryDirectory(prefix="shipei-bench-weights-") as weights_dir:
        write_weights(args.models, Path(weights_dir))
        rows = []
        for target in args.targets:
            print(f"[{target}] ...", flush=True)
            rows += (run_target(target, args.models, Path(weights_dir), args.repeats, args.sample_ms / 1e3,
                                args.warmup, args.opt)
                     if args.in_process else run_worker(target, args, weights_dir))
    order = {m: i for i, m in enumerate(MODELS)}
    rows.sort(key=lambda r: (order[r["model"]], TARGETS.index(r["target"])))
    report(rows, table(rows), GOAL)


def run_worker(target: str, args: argparse.Namespace, weights_dir: str) -> list[dict]:
    """run_target in a fresh process of its own; its rows, or skip rows saying why it failed."""
    cmd = [sys.executable, __file__, "--json", "--targets", target, "--models", *args.models,
           "--repeats", str(args.repeats), "--sample-ms", str(args.sample_ms), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--opt", str(args.opt), "--weights-dir", weights_dir]
    return worker_rows(cmd, target, args.models)


def worker_rows(cmd: list[str], target: str, models: list[str]) -> list[dict]:
    """Run a worker (`cmd`) for `target`; the rows it printed last, or skip rows saying why it failed."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = [line for line in proc.stdout.splitlines() if line.startswith("ROWS ")]
    if found:
        return json.loads(found[-1][5:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return [{"model": m, "target": target, "skip": f"worker exited {proc.returncode}: {' | '.join(tail)}"}
            for m in models]


def notes(rows: list[dict]) -> None:
    """Under a table: the rows skipped and why, the checks that failed, the threads and versions."""
    for r in rows:
        if "skip" in r:
            print(f"skipped {r['model']} on {r['target']}: {r['skip']}")
    for r in rows:
        for p in r.get("problems", []):
            print(f"check {r['model']} on {r['target']}: {p}")
    threads = sorted({f"{r['target']}: {r['threads']}" for r in rows if "threads" in r})
    if threads:
        print("threads/versions: " + "; ".join(threads))


def report(rows: list[dict], rendered: str, goal: float) -> None:
    """The table (`rendered`), the notes under it, and the rows whose ratio misses `goal`."""
    print()
    print(rendered)
    print()
    notes(rows)
    timed = [r for r in rows if "skip" not in r]
    if not timed:
        return
    print(f"median of {timed[0]['repeats']} interleaved samples per side; calls per sample: "
          + ", ".join(f"{r['model']}/{r['target']} {r['calls_per_sample']}" for r in timed))
    print("median of per-pair ratios (robust to load drift): "
          + ", ".join(f"{r['model']}/{r['target']} {r['pair_ratio']:.2f}" for r in timed))
    print("ratio of median process CPU times: "
          + ", ".join(f"{r['model']}/{r['target']} {r['cpu_ratio']:.2f}" for r in timed))
    slow = [r for r in timed if r["ratio"] > goal]
    print(f"goal ratio <= {goal}: " + ("met on every row" if not slow else
                                      "missed on " + ", ".join(f"{r['model']}/{r['target']}" for r in slow)))


if __name__ == "__main__":
    main()
