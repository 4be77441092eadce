"""Heterogeneous execution on this machine's CPU: what a hand-off between frameworks costs, what
pipelining a model split over two frameworks buys, and the CPU figures of the partitioner's cost
model. Each part runs in worker processes of its own; the parent prints markdown tables.

1. Hand-offs: every ordered pair of torch, jax, tf and mindspore, float32 tensors of 4 KiB to
   64 MiB. DLPack is what a pipeline's driver does: the source program's `export`, then the
   destination program's `accept`. The host copy is the source's `to_numpy`, one numpy copy, then
   the destination's `accept` of that copy. The programs are the ones shipei generates for a
   one-op model (`-x`), imported as the runtime imports them. The tensor handed off is the source
   program's result, as a stage's output is (MindSpore's results are never 64-byte aligned, so jax
   copies them: `c` marks a DLPack hand-off that copied). A time includes waiting for the result
   (jax dispatches asynchronously). Medians of `--repeats` (a quarter of them from 16 MiB on), the
   two ways in blocks, DLPack-copy-copy-DLPack.
2. Pipeline: examples/transformer.sp at d_model 512, n_layers 4, vocab 512, B=32, T=64, split in
   halves over two frameworks: the embeddings and blocks h.0-h.1 on the first (torch:cpu by
   default), h.2-h.3, ln_f and the LM head on the second (jax:cpu), by a device map. It is loaded
   as `compile(...).load()` gives it: one worker thread per stage, pinned to a core of its own,
   one intra-op thread. Each cycle measures, in rotating order:
   - unpipelined: the same executable with micro_batches=1, so the same threads and settings;
     this is the sequential run the speedup is against (what a user gets without pipelining);
   - one at a time: the same k micro-batches as k calls, no overlap (the speedup from overlap
     alone, without what smaller micro-batches cost);
   - pipelined: micro_batches=k (8);
   - each stage's program alone, on its inputs of the unpipelined call, in its worker thread (the
     call and waiting for its results; no hand-off).
   Speedup = unpipelined / pipelined (target >= 1.6 on 2 cores); overlap = one at a time /
   pipelined; overhead = unpipelined / (stage 0 + stage 1) (target <= 1.1); each is a per-cycle
   ratio, then the median over the cycles of a round. Why this size: a stage's call costs a fixed
   part (almost all in its matmuls, by torch's profiler) plus a part per sequence; the fixed part
   is worth about 0.1 sequence at d_model 512 but 0.33 at 384 (1.7 ms against 5.2 ms per
   sequence). With 4 sequences per micro-batch it adds about 3%; filling and draining the pipeline adds 1/k; the two
   frameworks side by side run about 3% slower than alone (shared cache and memory): a bound near
   2 / (1.03 * 1.125 * 1.03) = 1.68. At B=16, d_model 384 (2 sequences per micro-batch) the bound
   is about 1.45. An unpipelined call takes about 0.65 s.
   `--rounds` fresh worker processes. Before each, the parent waits (up to `--settle` s) for other
   processes to leave the CPUs idle and measures the cores it effectively gets (a VM's cores are
   sometimes throttled to about one); a round is clean when it got at least 80% of the cores
   before and after and other processes used at most 0.1 core meanwhile. The tables show medians
   and ranges over the clean rounds; every round is listed with its conditions.
3. `--roofline`: the CPU figures of ir/cost.py's `Costs`, where a CPU device is one core. Peak
   float32 and bfloat16 matmul FLOP/s (torch, 2048^3, on both cores with two threads and on one core with one); memory
   bandwidth (a 256 MiB copy: bytes read plus written per second, one core and two); each
   framework's dispatch cost per op (its generated program for a chain of 201 ops on tiny
   tensors against a chain of 1: the time per extra op, on one core). Printed next to ir/cost.py's
   values.

    python benchmarks/hetero.py                       # hand-offs and the pipeline
    python benchmarks/hetero.py --only pipeline --rounds 5 --json hetero.json
    python benchmarks/hetero.py --roofline
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("torch", "jax", "tf", "mindspore")
SIZES = {"4 KiB": 4 << 10, "64 KiB": 64 << 10, "1 MiB": 1 << 20, "16 MiB": 16 << 20, "64 MiB": 64 << 20}
SPEEDUP_GOAL, OVERHEAD_GOAL = 1.6, 1.1
#: A pipeline round is clean when this process effectively had this many cores before and after
#: it, and other processes kept the CPUs busy for at most a tenth of a core meanwhile.
CLEAN_CORES = 0.8 * (os.cpu_count() or 1)
RESULT = "RESULT "  # a worker's last line: this, then its measurements as JSON

ONE_OP = """
model OneOp() {
    forward(x: f32[N]) -> f32[N] {
        return -x
    }
}
"""
#: `n` ops in a row on tiny tensors (zeros: no denormals), for the dispatch cost per op.
CHAINS = {
    "elementwise": """
model Chain(n: int = 1) {
    forward(x: f32[8]) -> f32[8] {
        for i in range(n) {
            x = sin(x)
        }
        return x
    }
}
""",
    "matmul": """
model Chain(n: int = 1) {
    forward(x: f32[8, 8]) -> f32[8, 8] {
        for i in range(n) {
            x = matmul(x, x)
        }
        return x
    }
}
""",
}


# --- shared helpers ----------------------------------------------------------------------------------


def generated_program(source: str, target: str, directory: str, **params):
    """(module, loaded model): shipei's program for `source` on `target`, saved and imported as
    the runtime imports it."""
    from shipei.runtime.executable import import_module_file

    import shipei

    compiled = shipei.compile(source, target, **params)
    name = f"{target}_{'_'.join(f'{k}{v}' for k, v in params.items())}"
    module = import_module_file(compiled.save(Path(directory) / name))
    return module, module.load(module.WEIGHTS, "cpu")


def ready(tensor):
    """`tensor` once computed: jax returns before it has finished."""
    wait = getattr(tensor, "block_until_ready", None)
    return wait() if wait is not None else tensor


def timed(fn: Callable, *args) -> float:
    """Seconds `fn(*args)` takes."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def effective_cores(seconds: float = 0.25) -> float:
    """How many cores this process gets right now: a pure-Python loop alone against two copies
    side by side (2.0 on two free cores; a throttled VM gives about 1)."""
    n = int(seconds * 3e7)
    context = multiprocessing.get_context("fork")  # the parent has no framework loaded
    alone = timed(_burn, n)
    workers = [context.Process(target=_burn, args=(n,)) for _ in range(2)]
    both = timed(lambda: ([w.start() for w in workers], [w.join() for w in workers]))
    return 2 * alone / both


def _burn(n: int) -> None:
    total = 0
    for i in range(n):
        total += i


def settle(limit: float) -> float:
    """Wait, up to `limit` seconds, until other processes leave the CPUs idle and this process
    effectively gets its cores; the effective cores then."""
    deadline = time.monotonic() + limit
    while True:
        before = busy_jiffies()
        time.sleep(1.0)
        idle = others_cores(before, busy_jiffies(), 1.0) < 0.1
        cores = effective_cores()
        if (idle and cores >= CLEAN_CORES) or time.monotonic() > deadline:
            return cores


def busy_jiffies() -> tuple[int, int]:
    """(every CPU's busy jiffies, this process's), to tell how busy other processes kept the CPUs."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    mine = [int(f) for f in Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[11:13]]
    return busy, sum(mine)


def others_cores(before: tuple[int, int], after: tuple[int, int], seconds: float) -> float:
    return ((after[0] - before[0]) - (after[1] - before[1])) / os.sysconf("SC_CLK_TCK") / seconds


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --- 1. hand-offs ------------------------------------------------------------------------------------


def measure_handoffs(repeats: int) -> list[dict]:
    """One row per ordered pair: median microseconds per size by DLPack and by a host copy."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="shipei-hetero-") as tmp:
        programs = {t: generated_program(ONE_OP, t, tmp) for t in FRAMEWORKS}
        for source in FRAMEWORKS:
            for destination in FRAMEWORKS:
                if source != destination:
                    rows.append(_handoff_row(programs, source, destination, repeats))
                    print(f"{source} -> {destination}", file=sys.stderr, flush=True)
    return rows


def _handoff_row(programs: dict, source: str, destination: str, repeats: int) -> dict:
    """Per size, the two ways in blocks, ABBA: a hand-off right after a 64 MiB copy finds the caches
    full of that copy and its freed memory going back to the OS, which would add up to 0.5 ms to
    the (otherwise flat) DLPack one. A block's first hand-off is a warm-up."""
    (src, src_model), (dst, _) = programs[source], programs[destination]
    ways = {"dlpack": _by_dlpack, "host_copy": _by_host_copy}
    row = {"source": source, "destination": destination, "dlpack_copied": {}, **{f"{w}_us": {} for w in ways}}
    for label, size in SIZES.items():
        x = ready(src.call(src_model, src.accept(np.ones(size // 4, np.float32))[0])[0])
        times: dict[str, list[float]] = {w: [] for w in ways}
        copied = False
        block = (repeats if size <= 1 << 20 else max(7, repeats // 4)) // 2 + 1
        for way in ("dlpack", "host_copy", "host_copy", "dlpack"):
            for i in range(block):
                start = time.perf_counter()
                y, was_copied = ways[way](src, dst, x)
                ready(y)
                if i:
                    times[way].append(time.perf_counter() - start)
                copied |= was_copied and way == "dlpack"
                del y
        for way in ways:
            row[f"{way}_us"][label] = statistics.median(times[way]) * 1e6
        row["dlpack_copied"][label] = copied
        del x
    return row


def _by_dlpack(src, dst, tensor):
    return dst.accept(src.export(tensor))


def _by_host_copy(src, dst, tensor):
    """One copy in host memory: `to_numpy` already copies for tf, and is a view for the others."""
    array = src.to_numpy(tensor)
    return dst.accept(array if array.flags.owndata else array.copy())


def handoff_table(rows: list[dict]) -> str:
    lines = ["| source -> destination | way | " + " | ".join(SIZES) + " | 64 MiB / 4 KiB |",
             "|---|---|" + "---:|" * (len(SIZES) + 1)]
    for row in rows:
        for way, key in (("DLPack", "dlpack_us"), ("host copy", "host_copy_us")):
            cells = [f"{row[key][s]:,.1f}" + (" c" if key == "dlpack_us" and row["dlpack_copied"][s] else "")
                     for s in SIZES]
            growth = row[key]["64 MiB"] / row[key]["4 KiB"]
            lines.append(f"| {row['source']} -> {row['destination']} | {way} | " + " | ".join(cells)
                         + f" | {growth:,.0f}x |")
    return "\n".join(lines)


# --- 2. pipeline -------------------------------------------------------------------------------------


def pipeline_round(args: argparse.Namespace) -> dict:
    """One worker process's measurements: per configuration the median over `args.cycles` cycles,
    and the per-cycle ratios' medians."""
    import shipei

    first, second = args.stages.split(",")
    layers = args.layers
    device_map = {f"h.{i}": second for i in range(layers // 2, layers)} | {"ln_f": second, "lm_head": second,
                                                                            "*": first}
    compiled = shipei.compile(ROOT / "examples" / "transformer.sp", device_map=device_map, n_layers=layers,
                              d_model=args.d_model, max_len=args.seq)
    exe = compiled.load()
    try:
        return _measure_pipeline(exe, args)
    finally:
        exe.close()


def _measure_pipeline(exe, args: argparse.Namespace) -> dict:
    k = args.micro_batches
    tokens = np.random.default_rng(0).integers(0, 512, (args.batch, args.seq)).astype(np.int64)
    parts = np.array_split(tokens, k)
    values = {("input", 0): tokens}  # every stage's results on the unpipelined call
    for index in range(len(exe.stages)):
        values.update(exe.on_stage(index, lambda stage: stage.step(exe.stages, values)))
    arguments = [exe.on_stage(i, lambda stage: _arguments(stage, exe.stages, values)) for i in range(len(exe.stages))]

    def alone(index: int) -> float:
        def run(stage) -> float:
            return timed(lambda: [ready(stage.program.to_numpy(y))
                                  for y in stage.program.call(stage.model, *arguments[index])])
        return exe.on_stage(index, run)

    configs: dict[str, Callable[[], float]] = {
        "unpipelined": lambda: timed(lambda: exe(tokens)),
        "one at a time": lambda: timed(lambda: [exe(p) for p in parts]),
        "pipelined": lambda: timed(lambda: exe(tokens, micro_batches=k)),
        **{f"stage {i} alone": (lambda i=i: alone(i)) for i in range(len(exe.stages))},
    }
    for fn in configs.values():  # warm-up: jit compilation for both batch sizes
        fn(), fn()
    samples: dict[str, list[float]] = {name: [] for name in configs}
    before, start = busy_jiffies(), time.perf_counter()
    for cycle in range(args.cycles):
        names = list(configs)
        for name in names[cycle % len(names):] + names[:cycle % len(names)]:
            samples[name].append(configs[name]())
    others = others_cores(before, busy_jiffies(), time.perf_counter() - start)
    stages = [sum(s) for s in zip(*(samples[f"stage {i} alone"] for i in range(len(exe.stages))))]
    ratios = {"speedup": [a / b for a, b in zip(samples["unpipelined"], samples["pipelined"])],
              "overlap": [a / b for a, b in zip(samples["one at a time"], samples["pipelined"])],
              "overhead": [a / b for a, b in zip(samples["unpipelined"], stages)]}
    pipelined = exe(tokens, micro_batches=k)
    handoffs = [t.__dict__ for t in exe.transfers]
    unsplit, one_at_a_time = exe(tokens), np.concatenate([exe(p) for p in parts])
    return {"ms": {name: statistics.median(s) * 1e3 for name, s in samples.items()},
            **{name: statistics.median(r) for name, r in ratios.items()},
            "placements": exe.placements, "others_cores": others,
            "pipelined_equals_one_at_a_time": bool(np.array_equal(pipelined, one_at_a_time)),
            "pipelined_vs_unpipelined_max_abs": float(np.abs(pipelined - unsplit).max()),
            "handoffs": handoffs}


def _arguments(stage, stages, values) -> list:
    """What `stage` computes on, already in its framework (as its `step` takes it in)."""
    args = []
    for ref in stage.reads:
        if ref[0] == "input":
            args.append(stage.program.accept(values[ref], stage.device)[0])
        elif stages[ref[0]].placement != stage.placement:
            args.append(stage.program.accept(values[("exported", *ref)], stage.device)[0])
        else:
            args.append(values[ref])
    return args


def pipeline_report(rounds: list[dict], args: argparse.Namespace) -> str:
    """Medians and ranges over the clean rounds (all of them if none was clean)."""
    clean = [r for r in rounds if r["clean"]] or rounds
    names = list(rounds[0]["ms"])
    unpipelined = statistics.median(r["ms"]["unpipelined"] for r in clean)
    lines = [f"examples/transformer.sp, d_model {args.d_model}, n_layers {args.layers}, B={args.batch}, "
             f"T={args.seq}, {args.micro_batches} micro-batches; stages: {', '.join(rounds[0]['placements'])}; "
             f"{args.cycles} cycles per round; medians over {len(clean)} of {len(rounds)} rounds "
             f"({'the clean ones' if clean is not rounds or all(r['clean'] for r in rounds) else 'none was clean'})",
             "",
             "| configuration | ms per call | range over rounds | unpipelined / this |",
             "|---|---:|---:|---:|"]
    for name in names:
        s = spread([r["ms"][name] for r in clean])
        lines.append(f"| {name} | {s['median']:.1f} | {s['min']:.1f}-{s['max']:.1f} | "
                     f"{unpipelined / s['median']:.2f}x |")
    lines += ["", "| per-cycle ratio | median | range over rounds | target |", "|---|---:|---:|---|"]
    for name, goal in (("speedup", f">= {SPEEDUP_GOAL}"), ("overlap", ""), ("overhead", f"<= {OVERHEAD_GOAL}")):
        s = spread([r[name] for r in clean])
        met = "" if not goal else (" met" if (s["median"] >= SPEEDUP_GOAL if name == "speedup"
                                               else s["median"] <= OVERHEAD_GOAL) else " MISSED")
        lines.append(f"| {name} | {s['median']:.3f} | {s['min']:.3f}-{s['max']:.3f} | {goal}{met} |")
    lines += ["", "| round | effective cores before / after | other processes' load (cores) | clean | speedup "
              "| pipelined == one at a time | max abs diff to unpipelined |", "|---:|---|---:|---|---:|---|---:|"]
    for i, r in enumerate(rounds):
        lines.append(f"| {i} | {r['cores_before']:.2f} / {r['cores_after']:.2f} | {r['others_cores']:.2f} | "
                     f"{'yes' if r['clean'] else 'no'} | {r['speedup']:.3f} | "
                     f"{'exactly' if r['pipelined_equals_one_at_a_time'] else 'NO'} | "
                     f"{r['pipelined_vs_unpipelined_max_abs']:.1e} |")
    handoffs = clean[0]["handoffs"]
    lines.append(f"\nHand-offs in a pipelined call: {len(handoffs)}, "
                 f"{statistics.median(h['seconds'] for h in handoffs) * 1e6:.0f} us median, "
                 f"{'copied' if any(h['copied'] for h in handoffs) else 'zero-copy'}.")
    return "\n".join(lines)


# --- 3. roofline -------------------------------------------------------------------------------------


def measure_roofline(repeats: int) -> dict:
    """Peak matmul FLOP/s and copy bandwidth on both cores, then on one; then, pinned to one core,
    each framework's dispatch cost per op. Imports torch first and the other frameworks only once
    pinned, so their thread pools are sized for one core."""
    import torch

    cores = sorted(os.sched_getaffinity(0))
    out = {"cores": len(cores)}
    for label, threads in ((f"{len(cores)} cores", len(cores)), ("1 core", 1)):
        os.sched_setaffinity(0, cores[:threads])
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
            t = statistics.median(timed(torch.mm, a, b) for _ in range(repeats))
            out[f"{str(dtype).removeprefix('torch.')} matmul FLOP/s, {label}"] = 2 * 2048**3 / t
        src, dst = torch.ones(64 << 20), torch.empty(64 << 20)  # 256 MiB each
        t = statistics.median(timed(dst.copy_, src) for _ in range(repeats))
        out[f"copy bytes/s, {label}"] = 2 * src.numel() * 4 / t
    with tempfile.TemporaryDirectory(prefix="shipei-hetero-") as tmp:
        for target in FRAMEWORKS:
            for chain, source in CHAINS.items():
                out[f"{target} {chain}"] = _dispatch(target, source, tmp)
    from shipei.ir.cost import Costs

    costs = Costs()
    cpu = costs.devices["cpu"]
    out["cost.py"] = {"flops": cpu.flops, "low_precision_flops": cpu.low_precision_flops,
                      "bandwidth": cpu.bandwidth, "dispatch": dict(costs.dispatch), "call": dict(costs.call)}
    return out


def _dispatch(target: str, source: str, tmp: str, samples: int = 21) -> dict:
    """Seconds per call of a 1-op chain, and per extra op of a 201-op one: samples of about 20 ms
    of each, alternating, and the median of the pairs' differences."""
    programs = []
    for n in (1, 201):
        module, model = generated_program(source, target, tmp, n=n)
        x = module.accept(np.zeros((8, 8) if "8, 8" in source else 8, np.float32))[0]
        _calls(module, model, x, 20)
        programs.append((module, model, x, max(1, round(0.02 / max(timed(_calls, module, model, x, 1), 1e-7)))))
    times: list[list[float]] = [[], []]
    for i in range(samples):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            module, model, x, number = programs[k]
            times[k].append(timed(_calls, module, model, x, number) / number)
    return {"call": statistics.median(times[0]),
            "per_op": statistics.median((b - a) / 200 for a, b in zip(*times))}


def _calls(module, model, x, number: int) -> None:
    for _ in range(number):
        for y in module.call(model, x):
            ready(y)


def roofline_report(r: dict) -> str:
    cost, n = r["cost.py"], f"{r['cores']} cores"
    lines = ["| figure | measured | ir/cost.py |", "|---|---:|---:|"]
    for dtype, key in (("float32", "flops"), ("bfloat16", "low_precision_flops")):
        for label in (n, "1 core"):
            lines.append(f"| peak {dtype} matmul (torch 2048^3), {label} | "
                         f"{r[f'{dtype} matmul FLOP/s, {label}'] / 1e9:.1f} GFLOP/s | "
                         f"{cost[key] / 1e9 if label == '1 core' else float('nan'):.0f} GFLOP/s |"
                         .replace("nan GFLOP/s", "-"))
    for label in (n, "1 core"):
        lines.append(f"| memory bandwidth (256 MiB copy, read + write), {label} | "
                     f"{r[f'copy bytes/s, {label}'] / 1e9:.1f} GB/s | "
                     + (f"{cost['bandwidth'] / 1e9:.0f} GB/s |" if label == "1 core" else "- |"))
    lines += ["", "Dispatch on one core: each framework's generated program for a chain of ops on tiny "
              "tensors (zeros), time per call of a 1-op chain and per extra op of a 201-op chain (jax and tf compile "
              "it with XLA, which fuses the elementwise chain into one kernel; MindSpore's ms.jit graph runs "
              "each op as a kernel of its own):", "",
              "| framework | call, 1 op | per op, elementwise chain | per op, matmul chain | ir/cost.py call "
              "| ir/cost.py dispatch |", "|---|---:|---:|---:|---:|---:|"]
    for target in FRAMEWORKS:
        e, m = r[f"{target} elementwise"], r[f"{target} matmul"]
        lines.append(f"| {target} | {e['call'] * 1e6:.1f} us | {e['per_op'] * 1e6:.2f} us | {m['per_op'] * 1e6:.2f} us "
                     f"| {cost['call'][target] * 1e6:.1f} us | {cost['dispatch'][target] * 1e6:.1f} us |")
    return "\n".join(lines)


# --- the parent --------------------------------------------------------------------------------------


def worker(args: argparse.Namespace, part: str) -> dict:
    """Run `part` in a fresh process; its measurements."""
    cmd = [sys.executable, __file__, "--worker", part, *sys.argv[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):  # frameworks print banners to stdout too
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"{part} worker failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("handoff", "pipeline"), help="one part (default: both)")
    parser.add_argument("--roofline", action="store_true", help="the cost model's CPU figures instead")
    parser.add_argument("--repeats", type=int, default=31, help="hand-offs per size and way; roofline repeats")
    parser.add_argument("--stages", default="torch:cpu,jax:cpu", help="the two halves' placements")
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--micro-batches", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=10, help="cycles of every configuration per round")
    parser.add_argument("--rounds", type=int, default=3, help="fresh worker processes for the pipeline")
    parser.add_argument("--settle", type=float, default=120, help="seconds to wait, at the start and before each "
                        "pipeline round, for other processes to leave the CPUs idle")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to PATH as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # run one part and print its RESULT line
    args = parser.parse_args()
    if args.worker:
        measure = {"handoff": lambda: measure_handoffs(args.repeats), "pipeline": lambda: pipeline_round(args),
                   "roofline": lambda: measure_roofline(args.repeats)}[args.worker]
        print(RESULT + json.dumps(measure()), flush=True)
        return
    results: dict = {"effective_cores_at_start": settle(args.settle)}
    print(f"Effective cores at start: {results['effective_cores_at_start']:.2f} (of {os.cpu_count()})\n")
    if args.roofline:
        results["roofline"] = worker(args, "roofline")
        print(roofline_report(results["roofline"]))
    else:
        if args.only in (None, "handoff"):
            results["handoff"] = worker(args, "handoff")
            print("Hand-off time, microseconds (median), float32; c: DLPack copied (unaligned source):\n")
            print(handoff_table(results["handoff"]) + "\n", flush=True)
        if args.only in (None, "pipeline"):
            rounds = []
            for _ in range(args.rounds):
                before = settle(args.settle)
                result = worker(args, "pipeline")
                result.update(cores_before=before, cores_after=effective_cores())
                result["clean"] = min(before, result["cores_after"]) >= CLEAN_CORES and result["others_cores"] <= 0.1
                rounds.append(result)
            results["pipeline"] = rounds
            print(pipeline_report(rounds, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
