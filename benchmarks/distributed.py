"""Beyond one process: pipeline stages on Ray actors against one process running the whole model,
what an actor hop costs, and how planning time grows with the cluster. Prints markdown tables.

1. Throughput: examples/transformer.sp at d_model 512, 4 blocks, B=32, T=64 (as benchmarks/hetero.py),
   cut in two halves on torch by the planner's device map for this machine (`torch:cpu:0`, `torch:cpu:1`),
   each half a Ray actor on a local instance, pinned to a core with one thread, pipelined over 4, 8
   and 16 micro-batches; against one process running the whole model with torch on every core
   (what a user runs without shipei's pipeline). The baseline lives in a worker process of its own
   and times its own calls; the parent takes turns with it, every configuration once per cycle in
   rotating order. Ratio = baseline seconds / pipelined seconds (above 1: the pipeline is faster).
2. Hop overhead: the MLP at B=1, fc1 and fc2 on two placements, one micro-batch: a call's latency
   in this process's pinned threads, on Ray actors and as a Ray compiled graph, less the two stages'
   own times (each alone, in this process), over the three hops a call makes (input to stage 0,
   stage 0 to stage 1, stage 1 to the caller).
3. Planning: a 96-block GPT (d_model 4096, 19 billion parameters: it fits on 8 GPUs in f32) over
   clusters of 8 to 1,024 devices
   (machines of 8 GPUs; from 32 devices on, half of them GPUs, a quarter NPUs, a quarter TPUs),
   median of 3; the growth exponent between the
   smallest and largest cluster (the target: 2 or below, no worse than quadratic).

    python benchmarks/distributed.py [--cycles 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMER = ROOT / "examples" / "transformer.sp"
PARAMS = {"d_model": 512, "n_layers": 4, "max_len": 64}
BATCH, SEQ = 32, 64
MICRO_BATCHES = (4, 8, 16)


def _baseline(conn) -> None:
    """A worker process: the whole transformer on torch (every core); times each call it is asked for."""
    import shipei

    exe = shipei.compile(TRANSFORMER, "torch", **PARAMS).load("cpu")
    tokens = np.random.default_rng(0).integers(0, 512, (BATCH, SEQ))
    exe(tokens)
    conn.send("ready")
    for _ in iter(conn.recv, None):
        start = time.perf_counter()
        exe(tokens)
        conn.send(time.perf_counter() - start)


def throughput(cycles: int) -> list[dict]:
    import shipei
    from shipei.planning import plan_model, this_machine

    graph = shipei.parse(TRANSFORMER, **PARAMS)
    device_map = plan_model(graph, this_machine(), {"B": BATCH, "T": SEQ}, 8).plan.device_map()
    compiled = shipei.compile(graph, device_map=device_map)
    exe = compiled.load(ray=True)
    tokens = np.random.default_rng(0).integers(0, 512, (BATCH, SEQ))
    parent, child = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=_baseline, args=(child,), daemon=True)
    proc.start()
    assert parent.recv() == "ready"

    def baseline() -> float:
        parent.send(True)
        return parent.recv()

    def pipelined(k: int) -> float:
        start = time.perf_counter()
        exe(tokens, micro_batches=k)
        return time.perf_counter() - start

    configs = {"one process": baseline,
               **{f"ray, {k} micro-batches": (lambda k=k: pipelined(k)) for k in MICRO_BATCHES}}
    for fn in configs.values():  # warm-up: every micro-batch shape
        fn()
    samples: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for cycle in range(cycles):
        for name in names[cycle % len(names):] + names[:cycle % len(names)]:
            samples[name].append(configs[name]())
    parent.send(None)
    proc.join(30)
    exe.close()
    base = statistics.median(samples["one process"])
    return [{"configuration": name, "ms": statistics.median(s) * 1e3, "ratio": base / statistics.median(s),
             "samples_per_s": BATCH / statistics.median(s)} for name, s in samples.items()] + [
        {"placements": exe.placements, "device_map": device_map}]


def hop_overhead(repeats: int) -> list[dict]:
    import shipei
    from shipei import RayOptions

    compiled = shipei.compile(ROOT / "examples" / "mlp.sp", device_map={"fc1": "torch:cpu:0", "fc2": "torch:cpu:1"})
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    in_process = compiled.load()
    alone = sum(in_process.time_stages(x, repeats=repeats))
    rows = []
    ways = {"threads, this process": lambda: in_process, "Ray actors": lambda: compiled.load(ray=True),
            "Ray compiled graph": lambda: compiled.load(ray=RayOptions(compiled=True))}
    for name, load in ways.items():  # one at a time: each Ray pipeline holds both CPUs
        exe = load()
        for _ in range(5):
            exe(x)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            exe(x)
            seconds.append(time.perf_counter() - start)
        call = statistics.median(seconds)
        rows.append({"way": name, "call_ms": call * 1e3, "stages_ms": alone * 1e3,
                     "per_hop_ms": (call - alone) / 3 * 1e3})
        exe.close()
    return rows


def planning(repeats: int = 3) -> list[dict]:
    from shipei.ir.plan import Cluster, plan

    import shipei

    graph = shipei.parse(TRANSFORMER, n_layers=96, d_model=4096, n_heads=32, vocab=50257, max_len=2048)
    rows = []
    for devices in (8, 16, 32, 64, 128, 256, 512, 1024):
        spec = {"links": {"intra": 900, "inter": 50}, "machines": _machines(devices)}
        cluster = Cluster.from_dict(spec)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            found = plan(graph, cluster, {"B": 1, "T": 2048}, micro_batches=16)
            times.append(time.perf_counter() - start)
        rows.append({"devices": cluster.devices, "seconds": statistics.median(times), "stages": len(found.stages)})
    return rows


def _machines(devices: int) -> list[dict]:
    """`devices` devices: machines of 8 GPUs, and from 32 on, half GPUs, a quarter NPUs (8 a machine)
    and a quarter TPUs (4 a machine)."""
    if devices < 32:
        return [{"devices": {"cuda": 8}, "count": devices // 8}]
    return [{"devices": {"cuda": 8}, "count": devices // 16}, {"devices": {"ascend": 8}, "count": devices // 32},
            {"devices": {"tpu": 4}, "count": devices // 16}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=8, help="turns of every throughput configuration")
    parser.add_argument("--repeats", type=int, default=50, help="calls per hop-overhead measurement")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to PATH as JSON")
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    results = {"throughput": throughput(args.cycles), "hops": hop_overhead(args.repeats), "planning": planning()}
    ray.shutdown()
    *rows, where = results["throughput"]
    print(f"Throughput, transformer d_model 512, 4 blocks, B={BATCH}, T={SEQ}; Ray stages: "
          f"{', '.join(where['placements'])}; median of {args.cycles} turns:\n")
    print("| configuration | ms per batch | samples/s | one process / this |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['configuration']} | {r['ms']:.1f} | {r['samples_per_s']:.1f} | {r['ratio']:.2f}x |")
    print("\nActor hops, the MLP at B=1 in two stages, one micro-batch, median of "
          f"{args.repeats} calls:\n")
    print("| way | ms per call | stages alone, ms | overhead per hop, ms |\n|---|---:|---:|---:|")
    for r in results["hops"]:
        print(f"| {r['way']} | {r['call_ms']:.3f} | {r['stages_ms']:.3f} | {r['per_hop_ms']:.3f} |")
    rows = results["planning"]
    print("\nPlanning a 96-block GPT (d_model 4096), 16 micro-batches, median of 3:\n")
    print("| devices | seconds | stages |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['devices']} | {r['seconds']:.3f} | {r['stages']} |")
    slope = math.log(rows[-1]["seconds"] / rows[0]["seconds"]) / math.log(rows[-1]["devices"] / rows[0]["devices"])
    print(f"\nGrowth from {rows[0]['devices']} to {rows[-1]['devices']} devices: time ~ devices^{slope:.2f} "
          f"(target: at most 2, quadratic)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
