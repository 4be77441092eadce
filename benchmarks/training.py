"""Train-step time of shipei's generated programs against hand-written train steps in the same framework.

For examples/{digits_mlp,digits_cnn,transformer}.sp and every target, `shipei.Trainer` (AdamW,
lr 1e-3, weight decay 0.01: the generated program's `train_step`, which runs the framework's
autodiff and the optimizer's own generated program) runs beside an idiomatic hand-written train
step in the same framework (benchmarks/baselines/<target>_train.py: torch.optim.AdamW after
`loss.backward()`; one jitted jax step with a tree-mapped AdamW; a tf.function with
tf.GradientTape; MindSpore's value_and_grad and optimizer under ms.jit). Both start from the same
weights (the loss graph's seed-0 weights, one .safetensors file per model) and take the same
batches: the MLP and CNN B=64 rows of scikit-learn's digits, the transformer B=8, T=64 random
tokens.

Before timing, both take three steps on the same batches and their params are compared (rtol 1e-4,
atol 3e-5): a row whose programs disagree is reported under the table. AdamW divides by the
gradient's root mean square, so an f32 rounding in a near-zero gradient moves its parameter by up
to lr per step either way; the bound is 1% of the 3e-3 that three steps at lr 1e-3 can move one.
A step, on either side, is what a training loop runs: numpy batch in, one optimizer step, the loss read back as a float.
After warm-up, samples alternate (GH, HG, ...), each the mean of enough steps for ~50 ms; the
table shows medians, ratio = generated / hand-written, goal <= 1.1; under it the median of
per-pair ratios. Each target runs in its own worker process (see generated_vs_handwritten.py).

    python benchmarks/training.py --threads 1
    python benchmarks/training.py --targets torch jax --models digits_mlp --repeats 30
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # for `baselines` and the shared measurement

from generated_vs_handwritten import (  # noqa: E402 - after the path it is found on
    compare,
    limit_threads,
    machine_note,
    report,
    set_framework_threads,
    table,
    threads_note,
    worker_rows,
)

MODELS = ("digits_mlp", "digits_cnn", "transformer")
BASELINE_NAMES = {"digits_mlp": "mlp", "digits_cnn": "cnn", "transformer": "transformer"}
TARGETS = ("torch", "jax", "tf", "mindspore")
GOAL = 1.1
RTOL, ATOL = 1e-4, 0.01 * 3 * 1e-3  # 1% of three AdamW steps' largest move (above)


def batches(model: str, count: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same batches for both sides, cycled through while timing."""
    if model == "transformer":
        rng = np.random.default_rng(0)
        return [(rng.integers(0, 512, (8, 64)), rng.integers(0, 512, (8, 64))) for _ in range(count)]
    from shipei.training import Dataset

    data = Dataset.digits()
    return [(data.x_train[i * 64:(i + 1) * 64], data.y_train[i * 64:(i + 1) * 64]) for i in range(count)]


def write_weights(models: list[str], directory: Path) -> None:
    """<directory>/<model>.safetensors: the loss graph's seed-0 weights, by shipei's names."""
    import safetensors.numpy
    from shipei.ir.init import init_params

    import shipei

    for model in models:
        graph = shipei.parse(ROOT / "examples" / f"{model}.sp", method="loss")
        safetensors.numpy.save_file({k: np.asarray(v, order="C") for k, v in init_params(graph, 0).items()},
                                    str(directory / f"{model}.safetensors"))


def cycled(step, data: list[tuple[np.ndarray, np.ndarray]]):
    """`step` on the next batch each call (the timing harness calls it without arguments)."""
    at = [0]

    def call():
        x, y = data[at[0] % len(data)]
        at[0] += 1
        return step(x, y)

    return call


def run_model(target: str, model: str, weights_dir: Path, repeats: int, sample_s: float, warmup: int) -> dict:
    import safetensors.numpy

    from shipei.training import Trainer

    weights = weights_dir / f"{model}.safetensors"
    data = batches(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = Trainer(ROOT / "examples" / f"{model}.sp", target, optimizer="adamw", lr=1e-3,
                              weights=safetensors.numpy.load_file(str(weights)))
    except Exception as exc:  # noqa: BLE001 - the target cannot train this model: say why
        return {"model": model, "target": target, "skip": f"shipei.Trainer raised {type(exc).__name__}: {exc}"}
    try:
        baseline = importlib.import_module(f"baselines.{target}_train")
        base_step, base_params = baseline.train_step(BASELINE_NAMES[model], str(weights))

        def handwritten(x, y):
            return float(baseline.to_numpy(base_step(baseline.to_tensor(x), baseline.to_tensor(y))))
    except Exception as exc:  # noqa: BLE001
        return {"model": model, "target": target, "skip": f"hand-written baseline failed: {type(exc).__name__}: {exc}"}

    for x, y in data[:3]:
        trainer.step(x, y)
        handwritten(x, y)
    problems = [problem for name, got in trainer.weights.items()
                if (problem := _disagreement(name, got, base_params()[name]))]
    timing = compare((cycled(trainer.step, data), lambda loss: loss, []),
                     (cycled(handwritten, data), lambda loss: loss, []), repeats, sample_s, warmup)
    return {"model": model, "target": target, **timing, "repeats": repeats, "problems": problems,
            "threads": threads_note(target)}


def _disagreement(name: str, got: np.ndarray, want: np.ndarray) -> str | None:
    if np.allclose(got, want, rtol=RTOL, atol=ATOL):
        return None
    return f"param {name} after 3 steps: max abs difference {np.abs(got - want).max():.3g}"


def run_target(target: str, models: list[str], weights_dir: Path, repeats: int, sample_s: float,
               warmup: int) -> list[dict]:
    from shipei.codegen import get_target

    framework = get_target(target).framework
    if importlib.util.find_spec(framework) is None:
        return [{"model": m, "target": target, "skip": f"{framework} is not installed"} for m in models]
    return [run_model(target, m, weights_dir, repeats, sample_s, warmup) for m in models]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--repeats", type=int, default=30, help="interleaved samples per side (>= 10)")
    parser.add_argument("--sample-ms", type=float, default=50.0, help="aim for samples this long")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side after compiling")
    parser.add_argument("--threads", type=int, default=0,
                        help="pin each target's worker to this many cores and intra-op threads (0: defaults)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a worker's output
    parser.add_argument("--weights-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 10:
        parser.error("--repeats must be at least 10")

    if args.json:  # worker: one target, rows as JSON on the last line
        if args.threads:
            limit_threads(args.threads, args.targets)
        (target,) = args.targets
        try:
            if args.threads:
                set_framework_threads(target, args.threads)
            rows = run_target(target, args.models, args.weights_dir, args.repeats, args.sample_ms / 1e3, args.warmup)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows = [{"model": m, "target": target, "skip": f"benchmark failed: {type(exc).__name__}: {exc}"}
                    for m in args.models]
        print("\nROWS " + json.dumps(rows))
        return

    print(f"machine: {machine_note()}; threads: "
          + (f"{args.threads} per target (pinned)" if args.threads else "framework defaults"), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="shipei-bench-train-") as weights_dir:
        write_weights(args.models, Path(weights_dir))
        for target in args.targets:
            print(f"[{target}] ...", flush=True)
            rows += run_worker(target, args, weights_dir)
    rows.sort(key=lambda r: (MODELS.index(r["model"]), TARGETS.index(r["target"])))
    report(rows, table(rows, GOAL, ("shipei ms/step", "hand-written ms/step")), GOAL)


def run_worker(target: str, args: argparse.Namespace, weights_dir: str) -> list[dict]:
    cmd = [sys.executable, __file__, "--json", "--targets", target, "--models", *args.models, "--repeats",
           str(args.repeats), "--sample-ms", str(args.sample_ms), "--warmup", str(args.warmup), "--threads",
           str(args.threads), "--weights-dir", weights_dir]
    return worker_rows(cmd, target, args.models)


if __name__ == "__main__":
    main()
