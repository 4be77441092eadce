"""Fuzzer throughput: random graphs of 5-10 ops differentially tested per second, on all targets
together and on each alone.

Each configuration runs `shipei fuzz` (the `Fuzzer` engine) for `--seconds` after its workers
have started, without minimization so findings do not distort the rate; "graphs" counts each
graph once however many targets ran it. Wall-clock rates depend on what else the machine runs,
so the table also gives the CPU time spent per graph (parent and workers, after start-up) and
the rate that CPU cost allows on `--cores` idle cores (`--cores` / CPU per graph).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from shipei.testing import available_targets
from shipei.testing.fuzz import BATCH, Fuzzer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per configuration")
    parser.add_argument("--batch", type=int, default=BATCH, help="graphs compiled as one program")
    parser.add_argument("--max-nodes", type=int, default=10, help="graphs have max/2 to max ops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="for the CPU-bound rate")
    args = parser.parse_args()
    targets = available_targets()
    configs = [targets] + [[t] for t in targets] if len(targets) > 1 else [targets]
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print("| targets | graphs | graphs/s | start-up s | CPU ms per graph | graphs/s on idle cores (CPU-bound) "
          "| findings |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for config in configs:
        with tempfile.TemporaryDirectory() as out:
            summary = Fuzzer(config, seconds=args.seconds, seed=args.seed, max_nodes=args.max_nodes, out=out,
                             batch=args.batch, shrink=False, progress=None).run()
        name = "all: " + ", ".join(config) if len(config) > 1 else config[0]
        bound = args.cores / summary.cpu_per_graph
        print(f"| {name} | {summary.graphs} | {summary.steady_rate:.1f} | {summary.startup:.1f} "
              f"| {summary.cpu_per_graph * 1e3:.0f} | {bound:.1f} | {len(summary.findings)} |", flush=True)


if __name__ == "__main__":
    main()
