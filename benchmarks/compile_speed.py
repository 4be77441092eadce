"""Compile time of examples/transformer.sp as the model grows: parse + elaborate + verify + emit.

Prints a table of time per stage and per IR node at 1, 4, 12, 16 and 64 blocks (d_model 768,
12 heads). Growth should be close to linear: the per-node column should stay roughly flat.
Weights are not initialized (that is data, not compilation). The IR text round trip
(print + parse, what `--print-after` and saved models cost) is measured beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from shipei.codegen import emit
from shipei.frontend import elaborate_file
from shipei.ir.parser import parse_ir
from shipei.ir.printer import print_graph
from shipei.ir.verifier import verify

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "transformer.sp"


def measure(n_layers: int, repeats: int) -> tuple[int, float, float, float, float]:
    """(nodes, elaborate s, verify s, emit s, IR round trip s), each the median over `repeats` runs."""
    times: list[tuple[float, float, float, float]] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = elaborate_file(EXAMPLE, params={"n_layers": n_layers, "d_model": 768, "n_heads": 12,
                                                "vocab": 50257, "max_len": 1024})
        t1 = time.perf_counter()
        verify(graph)
        t2 = time.perf_counter()
        emit(graph, "torch", str(EXAMPLE))
        t3 = time.perf_counter()
        parse_ir(print_graph(graph))
        t4 = time.perf_counter()
        times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
    return (len(graph.nodes), *(statistics.median(t[i] for t in times) for i in range(4)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 4, 12, 16, 64])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    measure(1, 1)  # warm-up: grammar and prelude load once per process
    print("| blocks | IR nodes | elaborate ms | verify ms | emit ms | compile total ms | µs per node "
          "| IR print+parse ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.blocks:
        nodes, elab, ver, gen, text = measure(n, args.repeats)
        total = elab + ver + gen
        print(f"| {n} | {nodes} | {elab * 1e3:.1f} | {ver * 1e3:.1f} | {gen * 1e3:.1f} | {total * 1e3:.1f} "
              f"| {total / nodes * 1e6:.0f} | {text * 1e3:.1f} |")


if __name__ == "__main__":
    main()
