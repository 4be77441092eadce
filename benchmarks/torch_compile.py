"""torch.compile on shipei's -O3 program: the whole model (`compile=True`) against each fused group
(`compile="groups"`, regional compilation), both against the same program eager.

Per example model and mode, in a worker process of its own with an empty Inductor cache (so the
first call pays the whole cold compile): the seconds of the first call, then steady-state time,
sampled alternately with the eager program in that process as benchmarks/generated_vs_handwritten.py
samples (its inputs: mlp B=64, cnn B=16, transformer B=8 T=64; one core). Outputs are checked
against the numpy reference.

    python benchmarks/torch_compile.py
    python benchmarks/torch_compile.py --models transformer.sp --repeats 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from shipei.ir.tolerance import compare
from shipei.ir.types import DType

import shipei

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generated_vs_handwritten as gvh  # noqa: E402 - its measurement helpers and inputs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODES = {"groups": "groups", "model": True}


def measure(model: str, mode: str, repeats: int) -> str:
    """One row: cold first call and steady time of `mode` against eager, both -O3 with frozen weights."""
    with tempfile.TemporaryDirectory(prefix="shipei-compile-") as tmp:
        return _measure(model, mode, repeats, Path(tmp))


def _measure(model: str, mode: str, repeats: int, tmp: Path) -> str:
    import torch
    from shipei.runtime.executable import import_module_file

    graph = shipei.parse(EXAMPLES / model)
    inputs = gvh.MODELS[model.removesuffix(".sp")][1](np.random.default_rng(0))
    tensors = [torch.from_numpy(x.copy()) for x in inputs]
    sides = []
    for compile_ in (MODES[mode], False):
        # eager: without the oneDNN graph `call` would trace, which compile turns off as well
        compiled = shipei.compile(graph, "torch", opt=3, freeze=True,
                                  options={"compile": compile_, "onednn_graph": False})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = import_module_file(compiled.save(tmp / str(compile_)))  # weights beside it
            _, call = gvh.GENERATED["torch"](module, module.load(module.WEIGHTS, "cpu"))
            start = time.perf_counter()
            out = call(*tensors)
            first_s = time.perf_counter() - start
        if not compare(out.numpy(), shipei.reference(graph, inputs)[0], DType.f32).ok:
            raise AssertionError(f"{model} with compile={compile_!r} does not match the reference")
        sides.append(((call, lambda _: None, tensors), first_s))
    (fast, first_s), (eager, _) = sides
    t = gvh.compare(fast, eager, repeats=repeats, sample_s=0.02, warmup=5)
    return (f"| {model} | compile={MODES[mode]!r} | {first_s:.1f} | {t['handwritten_ms']:.3f} "
            f"| {t['generated_ms']:.3f} | {1 / t['ratio']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp.sp,cnn.sp,transformer.sp")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved samples per side")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)  # one model and mode, prints a row
    args = parser.parse_args()
    if args.worker:
        gvh.limit_threads(1)
        gvh.set_framework_threads("torch", 1)
        print(measure(args.models, args.worker, args.repeats))
        return
    print(f"torch.compile of the -O3 program ({gvh.machine_note()}; 1 thread; first call with an empty "
          f"Inductor cache; ms per call, median of {args.repeats} alternating samples):\n")
    print("| model | mode | first call s | eager ms | compiled ms | speedup over eager |")
    print("|---|---|---:|---:|---:|---:|", flush=True)
    for model in args.models.split(","):
        for mode in MODES:
            with tempfile.TemporaryDirectory(prefix="shipei-inductor-") as cache:
                proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--models", model,
                                       "--repeats", str(args.repeats)], capture_output=True, text=True,
                                      env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
            rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
            print("\n".join(rows) if rows else
                  f"| {model} | {mode} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]} |", flush=True)


if __name__ == "__main__":
    main()
