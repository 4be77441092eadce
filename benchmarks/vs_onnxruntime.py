"""shipei's programs against ONNX Runtime on CPU, one thread each, side by side.

Each example (mlp B=64, cnn B=16, transformer B=8 T=64) is compiled by shipei at its default level
for every target, and its generated torch program exported to ONNX (`torch.onnx.export`, the
dynamo exporter) and run under onnxruntime with all graph optimizations (ORT_ENABLE_ALL), one
intra-op and one inter-op thread. The export is checked against shipei's reference interpreter
before anything is timed.

Every side runs in a worker process of its own, pinned to one core, one thread (MindSpore's runtime
gets a second core for its actor thread: see `shipei.measuring.thread_env`): shipei's targets in
`shipei.measuring`'s worker, ONNX Runtime in this script's (`--worker`), which answers the same
requests. Both time what a deployed caller pays: numpy in, numpy out. In each round every worker
runs one block of calls (about 50 ms), the order rotating; a round's ratio is a target's block
median over ONNX Runtime's, and the table shows the median of the rounds' ratios and their range.
Above 1 means slower than ONNX Runtime. onnx, onnxscript and onnxruntime come with `shipei[bench]`.

    python benchmarks/vs_onnxruntime.py                 # all examples, 15 rounds
    python benchmarks/vs_onnxruntime.py --models cnn --targets torch --rounds 30
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from shipei.ir.inputs import random_inputs
from shipei.ir.tolerance import compare

import shipei
from shipei.measuring import REQUEST_TIMEOUT, BenchWorker, Entry, in_turn, serve, thread_env

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"mlp": {"B": 64}, "cnn": {"B": 16}, "transformer": {"B": 8, "T": 64}}
TARGETS = ("torch", "jax", "tf", "mindspore")
BLOCK = 0.05


def export(compiled: shipei.Compiled, inputs: list[np.ndarray], path: Path) -> str:
    """The generated torch program as ONNX at `path`; "" when ONNX Runtime computes what the reference
    does, else why not."""
    import onnxruntime as ort
    import torch

    exe = compiled.load("cpu")
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter reports its steps, and torch's deprecations
        torch.onnx.export(exe._model, tuple(torch.from_numpy(x) for x in inputs), str(path), dynamo=True,
                          input_names=[v.name for v in compiled.ir.inputs], verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {v.name: x for v, x in zip(compiled.ir.inputs, inputs)})
    want = shipei.reference(compiled.ir, inputs, compiled.weights)
    worst = [compare(g, w, v.dtype) for g, w, v in zip(got, want, compiled.ir.outputs)]
    return "" if all(w.ok for w in worst) else f"max error {max(w.error for w in worst):.3g}"


class OrtServed:
    """This script's worker: an ONNX Runtime session, answering as `shipei.measuring` does."""

    def load(self, path: str) -> dict:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return {"load_s": 0.0, "device": "cpu", "energy_note": ""}

    def prepare(self, inputs: list[np.ndarray], micro_batches: int) -> dict:
        feeds = {i.name: x for i, x in zip(self.session.get_inputs(), inputs)}
        self.call = lambda: self.session.run(None, feeds)
        start = time.perf_counter()
        self.call()
        return {"first_call_s": time.perf_counter() - start}

    def sample(self, calls: int) -> dict:
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            self.call()
            seconds.append(time.perf_counter() - start)
        return {"seconds": seconds, "joules": None}


def worker() -> None:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    served = OrtServed()
    # the entry's directory is the model's .onnx file
    serve({"load": lambda entry: served.load(str(entry.directory)), "prepare": served.prepare,
           "sample": served.sample})


def race(model: str, targets: list[str], rounds: int, tmp: Path) -> list[str]:
    dims = MODELS[model]
    graph = shipei.parse(ROOT / "examples" / f"{model}.sp")
    inputs = random_inputs(graph, 0, dims)
    onnx_path = tmp / f"{model}.onnx"
    refused = export(shipei.compile(graph, "torch"), inputs, onnx_path)
    if refused:
        return [f"| {model} | ONNX export does not compute the model: {refused} |"]
    sides = {"onnxruntime": BenchWorker(thread_env(1), tmp / f"{model}-ort.log",
                                        [sys.executable, __file__, "--worker"])}
    entries = {"onnxruntime": Entry("onnxruntime", onnx_path, 0.0)}
    for target in targets:
        directory = shipei.compile(graph, target).save(tmp / model / target).parent
        entries[target] = Entry(target, directory, 0.0, target, "cpu")
        sides[target] = BenchWorker(thread_env(1, target), tmp / f"{model}-{target}.log")
    try:
        calls, failed = {}, {}
        for name, w in sides.items():
            reply = w.request("load", REQUEST_TIMEOUT, entry=entries[name])
            reply = reply if "error" in reply else w.request("prepare", REQUEST_TIMEOUT, inputs=inputs, micro_batches=1)
            reply = reply if "error" in reply else w.request("sample", REQUEST_TIMEOUT, calls=5)
            if "error" in reply:
                failed[name] = reply["error"]
                continue
            calls[name] = max(1, math.ceil(BLOCK / statistics.median(reply["seconds"])))
        live = [n for n in sides if n in calls]
        blocks: dict[str, list[float]] = {n: [] for n in live}
        for r in range(rounds):
            for name in in_turn(live, r):
                reply = sides[name].request("sample", REQUEST_TIMEOUT, calls=calls[name])
                blocks[name].append(statistics.median(reply["seconds"]))
    finally:
        for w in sides.values():
            w.stop()
    base = blocks.get("onnxruntime")
    rows = []
    for target in targets:
        if target in failed or base is None:
            rows.append(f"| {model} | {target} | failed: {failed.get(target) or failed.get('onnxruntime')} |")
            continue
        ratios = [a / b for a, b in zip(blocks[target], base)]
        rows.append(f"| {model} | {target} | {statistics.median(blocks[target]) * 1e3:.3f} | "
                    f"{statistics.median(base) * 1e3:.3f} | {statistics.median(ratios):.2f} | "
                    f"{min(ratios):.2f}-{max(ratios):.2f} |")
    return rows


def main() -> None:
    if sys.argv[1:] == ["--worker"]:
        worker()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"shipei -O{shipei.ir.passes.manager.DEFAULT_OPT} against onnxruntime (ORT_ENABLE_ALL), one thread each, "
          f"{args.rounds} rounds; ratio above 1: slower than ONNX Runtime\n")
    print("| model | target | shipei ms | onnxruntime ms | ratio (median of rounds) | range |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="shipei-ort-") as tmp:
        for model in args.models:
            print("\n".join(race(model, args.targets, args.rounds, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
