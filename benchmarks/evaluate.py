"""The evaluation commands on the three examples, for the README's tables: `shipei bench` side by
side, the planner's predictions against measurements (analytic, and from a `bench --profile`),
and `shipei tune`'s memory estimate against each target's measured peak.

Every figure comes from the commands a user runs, each in a process of its own:

- bench: `shipei bench EXAMPLE --target all --threads 1` at the shapes of
  benchmarks/generated_vs_handwritten.py (mlp B=64, cnn B=16, transformer B=8, T=64); the workers
  take turns, one thread each, so that the targets compare without fighting over the two cores.
- plan: the whole batch of the Ray section (transformer B=32, T=64; cnn B=32; mlp B=256) in 8
  micro-batches over this machine's cores. `shipei plan --measure` from the analytic cost model,
  then `shipei bench --target torch --profile` at one micro-batch and `plan --measure --costs`,
  `--runs` times each: the range of measured / predicted per stage.
- tune: `shipei tune EXAMPLE --target T --memory-limit LIMIT` for every target: the largest batch,
  and the measured peak against the estimate at that batch.

    python benchmarks/evaluate.py                       # all three, about 15 minutes here
    python benchmarks/evaluate.py --sections plan --runs 3
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TARGETS = ("torch", "jax", "tf", "mindspore")
BENCH = {"mlp": ["--dim", "B=64"], "cnn": ["--dim", "B=16"], "transformer": ["--dim", "B=8", "--dim", "T=64"]}
#: The whole batch, and one micro-batch of it (8 micro-batches).
PLAN = {"transformer": (["--dim", "B=32", "--dim", "T=64"], ["--dim", "B=4", "--dim", "T=64"]),
        "cnn": (["--dim", "B=32"], ["--dim", "B=4"]),
        "mlp": (["--dim", "B=256"], ["--dim", "B=32"])}
TUNE = {"mlp": [], "cnn": [], "transformer": ["--dim", "T=64"]}
LIMIT = "512MiB"


def shipei(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "shipei", *args], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"shipei {' '.join(args)} failed:\n{result.stderr.strip()}")
    return result.stdout


def bench() -> None:
    print("## shipei bench, one thread per target, 10 rounds\n")
    for model, dims in BENCH.items():
        out = shipei("bench", str(EXAMPLES / f"{model}.sp"), "--target", "all", "--threads", "1", *dims)
        print(f"### {model} ({' '.join(dims[1::2])})\n")
        print("\n".join(line for line in out.splitlines()[1:]) + "\n")


def _ratios(out: str) -> list[float]:
    rows = re.findall(r"^\| (?:\d+|batch, pipelined) \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|$", out, re.M)
    return [float(r) for r in rows]


def plan(runs: int) -> None:
    print(f"## shipei plan --measure: measured / predicted, {runs} runs each\n")
    print("| model, whole batch | costs | stage 0 | stage 1 | batch, pipelined |\n|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for model, (whole, micro) in PLAN.items():
            path = str(EXAMPLES / f"{model}.sp")
            profile = str(Path(tmp) / f"{model}.json")
            shipei("bench", path, "--target", "torch", "--profile", profile, *micro)
            for costs, extra in (("analytic", []), ("profile", ["--costs", profile])):
                seen = [_ratios(shipei("plan", path, *whole, "--micro-batches", "8", "--measure", *extra))
                        for _ in range(runs)]
                cells = [f"{min(c):.2f}-{max(c):.2f}" for c in zip(*seen)]
                print(f"| {model}, {' '.join(whole[1::2])} | {costs} | {' | '.join(cells)} |")
    print()


def tune() -> None:
    print(f"## shipei tune --memory-limit {LIMIT}: the largest batch, measured peak / estimate\n")
    print("| model | " + " | ".join(TARGETS) + " |\n|---|" + "---|" * len(TARGETS))
    with tempfile.TemporaryDirectory() as tmp:
        for model, dims in TUNE.items():
            cells = []
            for target in TARGETS:
                report = Path(tmp) / f"{model}-{target}.json"
                try:
                    shipei("tune", str(EXAMPLES / f"{model}.sp"), "--target", target, "--memory-limit", LIMIT,
                           "--json", str(report), *dims)
                except RuntimeError as e:
                    cells.append(str(e).splitlines()[-1][:80])
                    continue
                tuned = json.loads(report.read_text())
                best = next(t for t in tuned["trials"] if t["batch"] == tuned["largest"])
                cells.append(f"B={best['batch']}: {best['peak'] / best['estimate']:.2f}x")
            print(f"| {model} {' '.join(dims[1::2])} | " + " | ".join(cells) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", default=["bench", "plan", "tune"], choices=["bench", "plan", "tune"])
    parser.add_argument("--runs", type=int, default=3, help="plan --measure runs per model and cost source")
    args = parser.parse_args()
    for section in args.sections:
        bench() if section == "bench" else plan(args.runs) if section == "plan" else tune()


if __name__ == "__main__":
    main()
