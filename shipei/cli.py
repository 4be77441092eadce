"""The `shipei` command line: devices, check, ir, compile, partition, plan, bench, tune, run, fuzz.

Every user error is printed as a located `ShipeiError` and exits 1; an internal error prints a
one-line summary and exits 2 (SHIPEI_TRACEBACK=1 shows the traceback for a bug report).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import api
from .codegen import TARGETS
from .codegen.frameworks import VERBOSE_VARIABLE
from .codegen.prepare import prepare
from .files import writable_file, writable_folder
from .frontend.limits import Limits
from .ir.errors import ShipeiError
from .ir.graph import Graph
from .ir.init import init_params
from .ir.inputs import random_inputs
from .ir.interpreter import bind_symbols
from .ir.optim import OPTIMIZERS
from .ir.passes import prune, quantize
from .ir.passes.manager import DEFAULT_OPT, PassContext, check_pass_name
from .ir.printer import print_graph
from .ir.profile import Profile
from .ir.schedule import SCHEDULES
from .ir.tolerance import compare
from .partitioned import CompiledPipeline, partition_request
from .planning import CLOSE
from .runtime.distributed import DEFAULT_TIMEOUT as DEFAULT_RAY_TIMEOUT
from .runtime.distributed import RayOptions
from .runtime.pipeline import summarize
from .runtime.weights import read_npz


def _value(text: str) -> Any:
    """A compile-time value from the command line: int, float or bool, never evaluated code."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ShipeiError(f"'{text}' is not an int, float or bool")


def _number(kind: type, low: float, what: str) -> Callable[[str], Any]:
    """An argparse type: an int of at least `low`, or a finite float above it."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or kind is float and not (math.isfinite(value) and value > low) or value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


def _checked_by(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type: the text, where `check` (which raises ShipeiError) accepts it."""
    def parse(text: str) -> str:
        try:
            check(text)
        except ShipeiError as e:
            raise argparse.ArgumentTypeError(e.message) from None
        return text
    return parse


def _output(what: str, *suffixes: str, replaced: bool = False) -> Callable[[str], str]:
    """An argparse type: a file to write `what` to (`files.writable_file`), ending in one of
    `suffixes` where given."""
    def check(text: str) -> None:
        if suffixes and Path(text).suffix not in suffixes:
            raise ShipeiError(f"{what} must be a {', '.join(suffixes)} file, got {text!r}")
        writable_file(text, "file", replaced=replaced)
    return _checked_by(check)


_folder = _checked_by(lambda text: writable_folder(text, "folder"))  # a folder to write into
_seconds = _number(float, 0.0, "a positive number of seconds")
_count = _number(int, 1, "a whole number >= 1")
_natural = _number(int, 0, "a whole number >= 0")


def _setting(text: str) -> Any:
    """An option's value: int, float or bool when it reads as one, else the text itself."""
    try:
        return _value(text)
    except ShipeiError:
        return text


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ShipeiError(f"{what} '{item}' should look like NAME=VALUE")
        out[key] = val
    return out


def _graph(args: argparse.Namespace, method: str = "forward") -> Graph:
    return api.parse(Path(args.file), model=args.model, limits=Limits(args.max_loop, args.max_size), method=method,
                     **_params(args))


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The model's parameters given with --set."""
    return {k: _value(v) for k, v in _pairs(args.set, "--set").items()}


def signature(graph: Graph) -> str:
    ins = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    outs = ", ".join(str(v.type) for v in graph.outputs)
    count = sum(int(np.prod(p.shape)) for p in graph.params)
    return (f"{graph.name}({ins}) -> ({outs})\n"
            f"  {count:,} parameters in {len(graph.params)} tensors, {len(graph.nodes)} ops")


def cmd_check(args: argparse.Namespace) -> int:
    print(signature(_graph(args)))
    return 0


def _context(args: argparse.Namespace) -> PassContext:
    """The pass options of the command line: dumps and timings go to stderr."""
    print_after = {name if name == "all" else check_pass_name(name) for name in args.print_after}
    print_after |= {"all"} if args.print_after_all else set()
    return PassContext(print_after=print_after, time_passes=args.time_passes)


def _pass_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: _setting(v) for k, v in _pairs(args.pass_option, "--pass-option").items()}


def _device_map(text: str | None) -> dict[str, str] | str | None:
    """--device-map: "auto", a JSON object of module path -> placement, or @FILE holding one (or a
    plan that `shipei plan --json FILE` wrote)."""
    if text is None or text == "auto":
        return text
    where = "--device-map"
    if text.startswith("@"):
        where = text[1:]
        try:
            text = Path(where).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ShipeiError(f"cannot read the device map {where}: {e}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ShipeiError(f"{where} is not JSON: {e}", hint='e.g. --device-map \'{"h.0": "torch:cpu", '
                                                            '"*": "jax:cpu"}\', @plan.json or auto') from None
    if isinstance(value, dict) and isinstance(value.get("device_map"), dict):
        value = value["device_map"]
    if not isinstance(value, dict):
        raise ShipeiError(f"{where} must be a JSON object of module path -> placement, or auto")
    return value


def _compile(args: argparse.Namespace, graph: Graph, target: str) -> api.Compiled | CompiledPipeline:
    passes = [p for p in args.passes.split(",") if p] if args.passes is not None else None
    options = {k: _setting(v) for k, v in _pairs(args.option, "--option").items()}
    compiled = api.compile(graph, target, seed=args.seed, opt=args.opt, passes=passes, disable=args.disable_pass,
                           freeze=args.freeze, pass_options=_pass_options(args), options=options,
                           context=_context(args), device_map=_device_map(getattr(args, "device_map", None)),
                           profile=_profile(getattr(args, "costs", None)))
    if isinstance(compiled, CompiledPipeline):
        print(f"placed: {compiled.summary(_dims(args))}")
    return compiled


def _profile(path: str | None) -> Profile | None:
    return Profile.load(path) if path else None


def _dims(args: argparse.Namespace) -> dict[str, int]:
    dims = {}
    for key, text in _pairs(getattr(args, "dim", []), "--dim").items():
        try:
            dims[key] = _count(text)
        except argparse.ArgumentTypeError as e:
            raise ShipeiError(f"--dim {key}: {e}") from None
    return dims


def _compression(compiled: api.Compiled) -> list[str]:
    """What quantize and prune did, when they ran, in a line each, in the order they ran."""
    results = compiled.passes.results
    reports = {"quantize": (quantize.summary, results.quantize_report), "prune": (prune.summary, results.prune_report)}
    ran = dict.fromkeys(t.name for t in compiled.passes.timings)
    return [summary(report) for summary, report in (reports[name] for name in ran if name in reports) if report]


def cmd_ir(args: argparse.Namespace) -> int:
    graph = _graph(args)
    notes = None
    if (args.opt or args.passes is not None or args.pass_option or args.placement or args.device_map
            or args.print_after or args.print_after_all or args.time_passes):
        passes = [p for p in args.passes.split(",") if p] if args.passes is not None else None
        ctx = _context(args)
        ctx.weights, ctx.frozen = init_params(graph, args.seed), args.freeze
        if args.placement or args.device_map:
            ctx.partition = partition_request(graph, args.target, _device_map(args.device_map) or {"*": args.target},
                                              _dims(args), _profile(args.costs))
        graph = api.optimize(graph, args.opt, passes=passes, disable=args.disable_pass,
                             pass_options=_pass_options(args), context=ctx)
        report = ctx.results.partition_report
        if report is not None:
            print(f"// placed: {report.summary(graph, _dims(args))}")
            if args.placement:
                notes = {n: d.reason for n, d in report.decisions.items()}
    print(print_graph(graph, locs=args.locs, notes=notes), end="")
    return 0


def _targets(name: str) -> list[str]:
    if name == "all":
        return list(TARGETS)
    if name not in TARGETS:
        raise ShipeiError(f"unknown target '{name}'", hint=f"targets are {', '.join(TARGETS)}, or all")
    return [name]


def cmd_compile(args: argparse.Namespace) -> int:
    graph = _graph(args)
    if args.device_map is not None:
        compiled = _compile(args, graph, _targets(args.target)[0])
        print("\n".join(_compression(compiled) + [""]), end="")
        print(f"wrote {compiled.save(args.output)}")
        return 0
    for i, target in enumerate(_targets(args.target)):
        compiled = _compile(args, graph, target)
        if i == 0:  # the passes do the same for every target
            print("\n".join(_compression(compiled) + [""]), end="")
        print(f"wrote {compiled.save(args.output)}")
    return 0


def _inputs(args: argparse.Namespace, graph: Graph) -> list[np.ndarray]:
    if args.inputs:
        data = read_npz(args.inputs, "inputs")
        missing = [v.name for v in graph.inputs if v.name not in data]
        if missing:
            raise ShipeiError(f"{args.inputs} has no array for input(s) {', '.join(missing)}",
                              hint=f"it holds {', '.join(data) or 'nothing'}")
        return [data[v.name] for v in graph.inputs]
    dims = _dims(args)
    try:
        return random_inputs(graph, args.seed, dims)
    except (MemoryError, ValueError) as e:  # numpy's for shapes past its limits or this machine's memory
        raise ShipeiError(f"cannot make random inputs at {dims}: {type(e).__name__}: {e}",
                          hint="smaller --dim values") from None


def _ray(args: argparse.Namespace) -> RayOptions | None:
    """--ray and its settings, or None to run in this process. Without --device-map, the model is
    one stage on the target (and --device): `args.device_map` says so from here on."""
    if not (args.ray or args.ray_address or args.ray_compiled):
        return None
    if args.device_map is None:
        args.device_map = json.dumps({"*": args.target if args.device == "auto" else f"{args.target}:{args.device}"})
    return RayOptions(address=args.ray_address, timeout=args.ray_timeout, compiled=args.ray_compiled)


def cmd_run(args: argparse.Namespace) -> int:
    graph = _graph(args)
    ray = _ray(args)
    compiled = _compile(args, graph, args.target)
    print("\n".join(_compression(compiled) + [""]), end="")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if isinstance(compiled, CompiledPipeline):
            exe = compiled.load(args.allow_fallback, check_indices=not args.no_check_indices, ray=ray)
        else:
            exe = compiled.load(args.device, args.allow_fallback, cast=args.cast,
                                check_indices=not args.no_check_indices)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    # a pipeline's stages end with the command: its threads, or its Ray actors and their folders
    with contextlib.closing(exe) if isinstance(compiled, CompiledPipeline) else contextlib.nullcontext():
        return _run_loaded(args, graph, compiled, exe, ray)


def _run_loaded(args: argparse.Namespace, graph: Graph, compiled: Any, exe: Any, ray: RayOptions | None) -> int:
    """`shipei run`'s call of the loaded program, its report and its check."""
    inputs = _inputs(args, graph)
    if isinstance(compiled, CompiledPipeline):
        outputs = exe.run(*inputs, micro_batches=args.micro_batches)
        count = len(exe.placements)
        where = " on Ray actors" if ray is not None else ""
        print(f"{graph.name} in {count} stage{'s' * (count != 1)}{where}: {', '.join(exe.placements)}; "
              f"{summarize(exe.transfers)}")
    else:
        outputs = exe.run(*inputs)
        print(f"{graph.name} on {args.target} ({exe.device})")
    for value, out in zip(graph.outputs, outputs):
        print(f"  output {value.type.dtype}{list(out.shape)}: mean {np.mean(out, dtype=np.float64):.6g}")
    if args.memory:
        print(f"  {exe.estimate_memory(**bind_symbols(exe.graph, inputs))}")
    if not args.check:
        return 0
    expected = api.reference(graph, inputs, seed=args.seed)  # the model as written, before any pass
    if _compression(compiled):
        print("  the check compares with the model as written: compression changes its results by design")
    failed = False
    for i, (value, out, ref) in enumerate(zip(graph.outputs, outputs, expected)):
        worst = compare(out, ref, value.dtype)
        status = "ok" if worst.ok else "MISMATCH"
        failed |= not worst.ok
        print(f"  check output {i}: max error {worst.error:.3g} (allowed {worst.allowed:.3g} "
              f"at {list(worst.index)}) {status}")
    return 1 if failed else 0


def _sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ShipeiError(f"--batch-sizes '{text}' should be whole numbers separated by commas, e.g. 1,8,64") from None


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    graph = _graph(args)
    if args.rounds < 1:
        raise ShipeiError(f"--rounds must be at least 1, got {args.rounds}")
    if args.threads is not None and args.threads < 1:
        raise ShipeiError(f"--threads must be at least 1, got {args.threads}")
    ray = _ray(args)
    device_map = _device_map(args.device_map)
    targets = [t.strip() for t in args.target.split(",")] if args.target != "all" else list(TARGETS)
    for t in targets:
        _targets(t)
    dims, sizes = _dims(args), _sizes(args.batch_sizes)
    if args.profile is not None:
        return _bench_profile(args, graph, targets, dims)
    options = {k: _setting(v) for k, v in _pairs(args.option, "--option").items()}
    with tempfile.TemporaryDirectory(prefix="shipei-bench-") as tmp:
        entries, refused = bench.compile_entries(graph, targets, Path(tmp), opt=args.opt, seed=args.seed,
                                                 device=args.device, device_map=device_map,
                                                 micro_batches=args.micro_batches, ray=ray, options=options,
                                                 profile=_profile(args.costs))
        rows = refused + bench.measure(graph, entries, dims, sizes, rounds=args.rounds, threads=args.threads,
                                       seed=args.seed)
    threads = f"{args.threads} thread{'s' * (args.threads != 1)} each" if args.threads else "frameworks' own threads"
    title = f"{graph.name} at -O{args.opt}, {threads}, {args.rounds} rounds"
    print(title)
    print("\n".join(bench.table(rows)))
    print(bench.ranking(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": graph.name, "opt": args.opt, "threads": args.threads,
                                               "dims": dims, "ranking": bench.ranking(rows),
                                               "rows": [r.as_json() for r in rows]}, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        bench.plot(rows, Path(args.plot), title)
        print(f"wrote {args.plot}")
    return 0 if any(r.ok for r in rows) else 1


def _bench_profile(args: argparse.Namespace, graph: Graph, targets: list[str], dims: dict[str, int]) -> int:
    from .bench import symbols_given
    from .profiling import profile

    if args.device_map is not None or args.batch_sizes is not None:  # --ray sets a device map
        raise ShipeiError("--profile times one model's groups on each target at --dim's shapes: leave out "
                          "--device-map, --batch-sizes and --ray")
    symbols_given(graph, dims)
    results, measured = profile(graph, targets, dims, opt=args.opt, seed=args.seed, rounds=args.rounds)
    at = ", ".join(f"{k}={v}" for k, v in dims.items())
    print(f"{graph.name} at -O{args.opt}{', ' + at if at else ''}: each fused group on one thread, one core "
          f"(the cost model's CPU device), {args.rounds} rounds")
    for result in results:
        print("\n".join(line for line in result.table() if line))
    if not measured.call:
        return 1
    path = Path(args.profile or f"{Path(args.file).stem}.profile.json")
    measured.save(path)
    print(f"wrote {path} (use it: shipei plan {args.file} --costs {path} ..., or with --device-map)")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .ir.optim import Optimizer
    from .runtime.memory import estimate_training_memory
    from .tune import Training, limit_text, parse_size, tune

    if args.lr:
        return _lr_range_test(args)
    training = Training(Path(args.file), args.optimizer, args.model, _params(args)) if args.train else None
    graph = _graph(args, "loss" if args.train else "forward")
    limit = parse_size(args.memory_limit) if args.memory_limit is not None else None
    tuned = tune(graph, args.target, _dims(args), limit=limit, margin=args.margin, device=args.device,
                 max_batch=args.max_batch, opt=args.opt, seed=args.seed, training=training)
    at = ", ".join(f"{k}={v}" for k, v in _dims(args).items())
    what = f"training ({args.optimizer}) " if training else ""
    print(f"{graph.name} {what}on {args.target} ({tuned.device}){', ' + at if at else ''}: {limit_text(tuned)}")
    if training:
        print(estimate_training_memory(graph, {**_dims(args), tuned.symbol: tuned.largest.batch},
                                       len(Optimizer.named(args.optimizer).state)))
    print("\n".join(tuned.table()))
    print("\n".join(tuned.summary()))
    if args.json:
        Path(args.json).write_text(json.dumps(tuned.as_json(), indent=1))
        print(f"wrote {args.json}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training import Dataset, Trainer, print_progress

    params = _params(args)
    data = Dataset.digits(args.seed) if args.data == "digits" else Dataset.load(args.data, args.seed)
    steps = args.epochs * -(-len(data.x_train) // args.batch)
    settings = dict(optimizer=args.optimizer, lr=args.lr, schedule=args.schedule, warmup=args.warmup,
                    total_steps=steps, clip_norm=args.clip_norm, precision=args.precision)
    common = dict(device=args.device, seed=args.seed, model=args.model, **params)
    if args.resume:
        trainer = Trainer.resume(args.resume, Path(args.file), args.target, clip_norm=args.clip_norm,
                                 precision=args.precision, **common)
        print(f"resumed {args.resume} at epoch {trainer.epoch}, step {trainer.step_count}")
    else:
        trainer = Trainer(Path(args.file), args.target, **settings, **common)
    opt = trainer.optimizer
    print(f"training {trainer.loss_graph.name} on {args.target} ({args.device}): {len(data.x_train):,} examples, "
          f"{len(data.x_val):,} held out; {opt.name} lr {args.lr:g} ({args.schedule}, warm-up {args.warmup}), "
          f"batch {args.batch}" + (f", {args.precision} mixed precision" if args.precision != "f32" else ""))
    history = trainer.fit(data, args.epochs, args.batch, progress=print_progress, checkpoint=args.checkpoint)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for row in history.rows:
        print(f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  held-out loss {row['val_loss']:.4f}  "
              f"accuracy {row['val_accuracy']:.2%}  lr {row['lr']:.3g}  {row['seconds']:.1f} s")
    accuracy = history.rows[-1]["val_accuracy"] if history.rows else trainer.evaluate(data.x_val, data.y_val)[1]
    print(f"{trainer.loss_graph.name}: {accuracy:.2%} held-out accuracy after {trainer.epoch} epochs "
          f"({trainer.step_count} steps)")
    if args.checkpoint:
        print(f"wrote {args.checkpoint}")
    return 0


def _lr_range_test(args: argparse.Namespace) -> int:
    """shipei tune --lr: the learning-rate range test on the model's loss."""
    from .training import Dataset, Trainer, lr_range_test

    params = _params(args)
    data = Dataset.digits(args.seed) if args.data == "digits" else Dataset.load(args.data, args.seed)
    trainer = Trainer(Path(args.file), args.target, optimizer=args.optimizer, device=_cpu(args.device),
                      seed=args.seed, model=args.model, **params)
    found = lr_range_test(trainer, data, args.batch, args.steps, args.lr_min, args.lr_max)
    print(f"{trainer.loss_graph.name} on {args.target}, {args.optimizer}, batch {args.batch}: learning-rate range "
          f"test from {args.lr_min:g} to {args.lr_max:g}, stopped {found.stopped}")
    print("\n".join(found.table()))
    print(f"suggested learning rate: {found.suggestion:.3g} (where the loss falls fastest)")
    if args.plot:
        print(f"wrote {found.plot(args.plot)}")
    return 0


def _cpu(device: str) -> str:
    return "cpu" if device == "auto" else device


def cmd_plan(args: argparse.Namespace) -> int:
    from .ir.plan import Cluster
    from .planning import coverage, measure, plan_model, this_machine

    graph = _graph(args)
    cluster = Cluster.from_toml(args.cluster) if args.cluster else this_machine(args.target)
    where = args.cluster or f"this machine ({cluster.devices} CPU cores, {args.target})"
    profile = _profile(args.costs)
    planned = plan_model(graph, cluster, _dims(args), args.micro_batches, args.opt, profile)
    dims = ", ".join(f"{k}={v}" for k, v in planned.dims.items())
    print(f"{graph.name} on {where}: {len(planned.plan.stages)} stages of {cluster.devices} devices, "
          f"{args.micro_batches} micro-batches at {dims}")
    if profile is not None:
        print(coverage(planned, profile, cluster))
    print("\n".join(planned.plan.table()))
    print(planned.summary())
    device_map = planned.plan.device_map()
    print(f"device map: {json.dumps(device_map)}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device_map": device_map, "micro_batches": args.micro_batches, "dims": planned.dims,
            "seconds": planned.plan.seconds, "bubble": planned.plan.bubble, "throughput": planned.throughput,
            "stages": [{"layers": s.layers, "machine": s.machine, "placement": str(s.placement), "seconds": s.seconds,
                        "memory_bytes": s.memory_bytes, "transfer_bytes": s.transfer_bytes}
                       for s in planned.plan.stages]}, indent=1))
        print(f"wrote {args.json} (run it: shipei run {args.file} --device-map @{args.json} ...)")
    if not args.measure:
        return 0
    if args.cluster:
        raise ShipeiError("--measure runs the plan here, so it plans for this machine: leave out --cluster")
    measured = measure(graph, planned, args.seed)
    print("\n".join(["measured here, each stage alone on one micro-batch (pinned to its core):",
                     *measured.table()]))
    print(f"every stage's prediction within {CLOSE:.0%} of its measurement: {'yes' if measured.close else 'no'}")
    if not measured.close and profile is None:
        at = " ".join(f"--dim {k}={v}" for k, v in planned.dims.items())
        print(f"the predictions are the analytic cost model's; for measured ones, profile the model at one "
              f"micro-batch and plan with it: shipei bench {args.file} --target {args.target} {at} --profile P.json, "
              f"then --costs P.json")
    return 0


def cmd_partition(args: argparse.Namespace) -> int:
    from .ir.draw import draw_html, draw_svg

    graph = _graph(args)
    compiled = _compile(args, graph, args.target)
    if not isinstance(compiled, CompiledPipeline):
        raise ShipeiError("nothing to partition: no --device-map, and no hint in the source names another target "
                          "or a device", hint='e.g. --device-map \'{"h.0": "torch:cpu", "*": "jax:cpu"}\'')
    for stage in compiled.plan.stages:
        per_call = len(prepare(stage.graph).nodes)  # less what the stage computes from its weights at load
        at_load = f" (+{len(stage.graph.nodes) - per_call} at load)" if per_call < len(stage.graph.nodes) else ""
        print(f"  stage {stage.index}  {str(stage.placement):<16} {per_call:4d} nodes{at_load}  "
              f"{', '.join(stage.modules) or '-'}")
    report, dims = compiled.passes.results.partition_report, _dims(args)
    for path, draw in ((args.svg, draw_svg), (args.html, draw_html)):
        if path:
            Path(path).write_text(draw(compiled.ir, report, dims), encoding="utf-8")
            print(f"wrote {path}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from .runtime.devices import discover

    rows = [("target", "framework", "version", "devices")]
    for info in discover(timeout=args.timeout):
        status = ", ".join(info.devices) if info.installed and not info.error else (
            info.error or f"not installed: pip install 'shipei[{info.target}]'")
        rows.append((info.target, info.module, info.version or "-", status))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
    return 0


def cmd_fuzz(args: argparse.Namespace) -> int:
    if args.frontend:
        return _fuzz_frontend(args)
    from .testing.fuzz import BATCH, Fuzzer, resolve_targets
    from .testing.lowering import HETERO

    ops, dtypes = ([x.strip() for x in arg.split(",") if x.strip()] if arg else None for arg in (args.ops, args.dtypes))
    targets = resolve_targets(HETERO if args.hetero else args.targets)
    fuzzer = Fuzzer(targets, seconds=args.time, seed=args.seed, max_nodes=args.max_nodes,
                    out=args.out, batch=args.batch or BATCH, timeout=args.timeout or 60.0, device=args.device,
                    shrink=not args.no_minimize, inject=args.inject, ops=ops, dtypes=dtypes, opt=args.opt)
    summary = fuzzer.run()
    print(summary.table(), end="")
    print(f"summary written to {Path(args.out) / 'summary.txt'}")
    return 1 if summary.findings else 0


def _fuzz_frontend(args: argparse.Namespace) -> int:
    from .testing.fuzz_frontend import FrontendFuzzer

    summary = FrontendFuzzer(seconds=args.time, seed=args.seed, timeout=args.timeout or 10.0, out=args.out).run()
    print(summary.table(), end="")
    print(f"summary written to {Path(args.out) / 'frontend-summary.txt'}")
    return 1 if summary.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipei", description="Compile one DSL model for torch, jax, tf and "
                                     "mindspore, and run it.")
    parser.add_argument("--verbose", action="store_true",
                        help="show the frameworks' own start-up and compiler logging (quiet by default)")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("file", help="the model's .sp file")
        p.add_argument("--model", help="which model, when the file defines several")
        p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="override a compile-time parameter")
        p.add_argument("--max-loop", type=_count, default=Limits.loop, metavar="N",
                       help=f"static loop iterations elaboration may unroll, in all (default {Limits.loop:,})")
        p.add_argument("--max-size", type=_count, default=Limits.size, metavar="N",
                       help=f"ops, params and layers the model may have (default {Limits.size:,})")
        return p

    def passes(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("optimization")
        g.add_argument("-O", "--opt", type=int, choices=range(4), default=DEFAULT_OPT, metavar="N",
                       help=f"optimization level: -O0 (the program as written) to -O3 (fusion, memory "
                            f"planning); default -O{DEFAULT_OPT}")
        g.add_argument("--passes", metavar="A,B,...", help="run these passes, in order, instead of the -O level's")
        g.add_argument("--disable-pass", action="append", default=[], metavar="PASS", help="skip a pass")
        g.add_argument("--freeze", action="store_true",
                       help="make the weights part of the program (fold BatchNorm, precompute weight transposes; "
                            "needed by quantize and prune)")
        g.add_argument("--pass-option", action="append", default=[], metavar="NAME=VALUE",
                       help="a setting the passes read, e.g. sparsity=0.7, structured=true, layout=NHWC, "
                            "max_group_size=8")
        g.add_argument("--time-passes", action="store_true", help="print each pass's time to stderr")
        g.add_argument("--print-after", action="append", default=[], metavar="PASS",
                       help="print the IR after a pass to stderr")
        g.add_argument("--print-after-all", action="store_true", help="print the IR after every pass to stderr")

    def device_map(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device-map", metavar="JSON|auto",
                       help='place parts of the model by module path, as accelerate does: '
                            '\'{"h.0": "torch:cpu", "h.1": "jax:cpu", "*": "tf:cpu"}\', or auto')
        p.add_argument("--costs", metavar="PROFILE", help="weigh nodes by the times shipei bench --profile "
                       "measured, in place of the cost model's estimates")

    def target_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                       help="a target option, e.g. amp=bf16 or compile=true (torch), compute_dtype=bf16 (jax), "
                            "mixed_precision=fp16 (mindspore)")

    def ray_options(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("Ray (pip install 'shipei[ray]')")
        g.add_argument("--ray", action="store_true",
                       help="run each stage as a Ray actor on a local Ray instance (one stage without --device-map)")
        g.add_argument("--ray-address", metavar="ADDR",
                       help="join the Ray cluster at ADDR (what `ray start --head` printed)")
        g.add_argument("--ray-compiled", action="store_true", help="run the actors as a Ray compiled graph")
        g.add_argument("--ray-timeout", type=_seconds, default=DEFAULT_RAY_TIMEOUT, metavar="S",
                       help=f"seconds a call may take before the stage that has not answered counts as hung "
                            f"(default {DEFAULT_RAY_TIMEOUT:g}; a call at new shapes, which compiles, is allowed "
                            f"the stages' load timeout)")

    p = sub.add_parser("devices", help="installed frameworks and the devices each sees")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds allowed per framework probe")
    p.set_defaults(func=cmd_devices)
    command("check", "type-check a model and print its signature").set_defaults(func=cmd_check)
    p = command("ir", "print the model's IR (optimized with -O1..-O3 or --passes)")
    p.add_argument("--locs", action="store_true", help="show each node's source location")
    p.add_argument("--placement", action="store_true",
                   help="partition it (by --device-map and the source's hints) and say why each node went where")
    p.add_argument("--target", default="torch", choices=TARGETS, help="where what nothing places runs (default torch)")
    p.add_argument("--dim", action="append", default=[], metavar="SYM=N", help="a shape symbol's value, for costs")
    device_map(p)
    p.add_argument("--seed", type=_natural, default=0, help="weight initialization seed (for --freeze)")
    passes(p)
    p.set_defaults(func=cmd_ir)
    p = command("compile", "write the generated program, weights and IR")
    p.add_argument("--target", default="torch", help=f"{', '.join(TARGETS)} or all")
    target_options(p)
    device_map(p)
    p.add_argument("-o", "--output", required=True, type=_folder, help="output directory")
    p.add_argument("--seed", type=_natural, default=0, help="weight initialization seed")
    passes(p)
    p.set_defaults(func=cmd_compile)
    p = command("partition", "place a model's parts (--device-map, the source's hints), print the stages and draw them")
    p.add_argument("--target", default="torch", choices=TARGETS, help="where what nothing places runs (default torch)")
    device_map(p)
    p.add_argument("--dim", action="append", default=[], metavar="SYM=N", help="a shape symbol's value, for costs")
    p.add_argument("--svg", metavar="FILE", type=_output("--svg", ".svg"),
                   help="draw the partitioned graph, coloured by placement")
    p.add_argument("--html", metavar="FILE", type=_output("--html", ".html"),
                   help="the same drawing in a page with the stage table")
    p.add_argument("--seed", type=_natural, default=0, help="weight initialization seed")
    passes(p)
    target_options(p)
    p.set_defaults(func=cmd_partition)
    p = command("plan", "cut a model into pipeline stages for a cluster (a TOML file) or this machine, and "
                        "predict their times, memory and transfers")
    p.add_argument("--cluster", metavar="TOML", help="machines, their devices and links (default: this machine, "
                   "a CPU device per core)")
    p.add_argument("--target", default="torch", choices=TARGETS, help="the framework on this machine's cores")
    p.add_argument("--dim", action="append", default=[], metavar="SYM=N", help="a shape symbol at the whole batch")
    p.add_argument("--micro-batches", type=int, default=8, metavar="N", help="micro-batches per batch (default 8)")
    p.add_argument("--json", metavar="FILE", type=_output("--json"),
                   help="write the plan and its device map (for --device-map @FILE)")
    p.add_argument("--measure", action="store_true",
                   help="run the plan here and print each stage's predicted and measured time")
    p.add_argument("--costs", metavar="PROFILE", help="measured node and call times (shipei bench --profile) in "
                   "place of the cost model's estimates")
    p.add_argument("-O", "--opt", type=int, choices=range(4), default=DEFAULT_OPT, metavar="N",
                   help=f"the passes the plan assumes (default -O{DEFAULT_OPT})")
    p.add_argument("--seed", type=_natural, default=0, help="weight initialization seed (for --measure)")
    p.set_defaults(func=cmd_plan)
    p = command("bench", "measure throughput, latency, compile time, memory and energy on every target, side "
                         "by side, and say which to deploy on")
    p.add_argument("--target", default="all", help=f"all, or some of {', '.join(TARGETS)}, comma-separated")
    p.add_argument("--device", default="auto", help="the device each target runs on (default: its best here)")
    device_map(p)
    p.add_argument("--micro-batches", type=int, default=1, metavar="N",
                   help="with --device-map: micro-batches per call")
    ray_options(p)
    p.add_argument("--dim", action="append", default=[], metavar="SYM=N",
                   help="a shape symbol's value (each needs one)")
    p.add_argument("--batch-sizes", metavar="N,N,...", help="measure at each of these values of the batch symbol")
    p.add_argument("--rounds", type=int, default=10, help="blocks of calls per target, the targets taking turns "
                   "(default 10)")
    p.add_argument("--threads", type=int, metavar="N", help="hold every framework to N threads on N cores "
                   "(default: each framework's own choice)")
    p.add_argument("--json", metavar="FILE", type=_output("--json"),
                   help="write every figure, and each call's latency, as JSON")
    p.add_argument("--plot", metavar="FILE", type=_output("--plot", ".png", ".svg", ".html"),
                   help="draw latency distributions and throughput against batch size "
                   "(.png, .svg or .html)")
    p.add_argument("--profile", nargs="?", const="", metavar="FILE",
                   help="instead: time each fused group on each target against the cost model's estimate, and "
                        "save the profile for --costs (default FILE: MODEL.profile.json)")
    p.add_argument("--seed", type=_natural, default=0, help="weight and input seed")
    p.add_argument("-O", "--opt", type=int, choices=range(4), default=DEFAULT_OPT, metavar="N",
                   help=f"optimization level (default -O{DEFAULT_OPT})")
    target_options(p)
    p.set_defaults(func=cmd_bench)
    p = command("tune", "find the largest batch that fits the device's memory (or --memory-limit), and the "
                        "batch with the most throughput, by running trials")
    p.add_argument("--target", default="torch", choices=TARGETS)
    p.add_argument("--device", default="auto", help="where the trials run (default: the target's best here)")
    p.add_argument("--memory-limit", metavar="SIZE", help="memory the model may use, e.g. 4GiB (default: what is "
                   "available: the machine's for a CPU, the device's free memory for an accelerator)")
    p.add_argument("--margin", type=float, default=0.1, help="the part of the limit kept free (default 0.1)")
    p.add_argument("--max-batch", type=int, default=1 << 16, metavar="N", help="search no higher (default 65536)")
    p.add_argument("--dim", action="append", default=[], metavar="SYM=N",
                   help="a shape symbol's value (each but the batch needs one)")
    p.add_argument("--json", metavar="FILE", type=_output("--json"), help="write every trial as JSON")
    p.add_argument("--train", action="store_true", help="the batch for training steps of the model's loss "
                   "(gradients, --optimizer's state, the activations the backward pass keeps), not for inference")
    p.add_argument("--seed", type=_natural, default=0, help="weight and input seed")
    p.add_argument("-O", "--opt", type=int, choices=range(4), default=DEFAULT_OPT, metavar="N",
                   help=f"optimization level (default -O{DEFAULT_OPT})")
    g = p.add_argument_group("learning rate (--lr): a range test of the model's loss, as fastai's lr_find")
    g.add_argument("--lr", action="store_true", help="find a learning rate instead of a batch size")
    g.add_argument("--data", default="digits", metavar="digits|FILE.npz", help="the training data (default digits)")
    g.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS, help="also for --train (default adamw)")
    g.add_argument("--batch", type=_count, default=64)
    g.add_argument("--steps", type=_count, default=100, help="steps from --lr-min to --lr-max (default 100)")
    g.add_argument("--lr-min", type=float, default=1e-6)
    g.add_argument("--lr-max", type=float, default=1.0)
    g.add_argument("--plot", metavar="FILE.png", type=_output("--plot", ".png", ".svg", ".pdf"),
                   help="draw loss against learning rate")
    p.set_defaults(func=cmd_tune)
    p = command("train", "train the model's params on a target with its loss method: shipei's optimizer and "
                         "schedule, the framework's autodiff")
    p.add_argument("--target", default="torch", choices=TARGETS)
    p.add_argument("--device", default="cpu", help="where it trains (default cpu)")
    p.add_argument("--data", default="digits", metavar="digits|FILE.npz",
                   help="scikit-learn's bundled 8x8 digits (default), or an .npz of x and y (or x_train, y_train, "
                        "x_val, y_val)")
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=1e-3, help="the peak learning rate (default 1e-3)")
    p.add_argument("--precision", default="f32", choices=("f32", "bf16", "f16"),
                   help="bf16: mixed precision, matmul and convolution in bfloat16 over float32 params, where "
                        "the target offers it (default f32)")
    p.add_argument("--schedule", default="constant", choices=SCHEDULES)
    p.add_argument("--warmup", type=_natural, default=0, metavar="STEPS", help="linear warm-up steps (default 0)")
    p.add_argument("--epochs", type=_natural, default=10)
    p.add_argument("--batch", type=_count, default=64)
    p.add_argument("--clip-norm", type=float, metavar="X", help="clip the gradients' global L2 norm to X")
    p.add_argument("--checkpoint", metavar="FILE", type=_output("--checkpoint", replaced=True),
                   help="write params, optimizer state and step here after each "
                   "epoch (safetensors)")
    p.add_argument("--resume", metavar="FILE", help="continue from a checkpoint (written on any target)")
    p.add_argument("--seed", type=_natural, default=0, help="initial weights, held-out split and batch order")
    p.set_defaults(func=cmd_train)
    p = command("run", "compile, run and optionally check against the reference")
    passes(p)
    p.add_argument("--target", default="torch", choices=TARGETS)
    target_options(p)
    p.add_argument("--device", default="auto")
    device_map(p)
    p.add_argument("--micro-batches", type=int, default=1, metavar="N",
                   help="with --device-map: split the batch so that the stages work side by side")
    p.add_argument("--allow-fallback", action="store_true",
                   help="run on the CPU where a device asked for (--device, or a placement) is absent")
    ray_options(p)
    p.add_argument("--cast", action="store_true", help="allow weights of another dtype of the same kind (f64 to f32)")
    p.add_argument("--no-check-indices", action="store_true",
                   help="leave out-of-range gather indices to the target instead of refusing them")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--inputs", help=".npz file with one array per input name")
    source.add_argument("--random", action="store_true", help="random inputs (the default)")
    p.add_argument("--dim", action="append", default=[], metavar="SYM=N", help="value of a shape symbol")
    p.add_argument("--seed", type=_natural, default=0)
    p.add_argument("--check", action="store_true", help="compare with the numpy reference; exit 1 on mismatch")
    p.add_argument("--memory", action="store_true", help="print the memory estimate at these inputs' shapes: "
                   "weights, inputs and the activations plan-memory plans")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("fuzz", help="differential-test every target against the reference on random graphs, "
                                    "or (--frontend) feed the front end broken and hostile programs")
    p.add_argument("--hetero", action="store_true",
                   help="each batch of graphs partitioned over every available framework and run as one pipeline, "
                        "against the reference")
    p.add_argument("--frontend", action="store_true",
                   help="mutated and hostile programs through the front end and the code generators: counts "
                        "located and unlocated errors, tracebacks, unsafe generated code and hangs")
    p.add_argument("--targets", default="all", help="all, or a comma-separated list such as torch,jax")
    p.add_argument("--time", type=_seconds, default=60.0,
                   help="seconds of fuzzing once the workers are up (default 60)")
    p.add_argument("--seed", type=_natural, default=0)
    p.add_argument("--max-nodes", type=_count, default=10, help="ops per graph: between half of this and this")
    p.add_argument("--ops", help="only these ops, comma-separated (default: every registered op)")
    p.add_argument("--dtypes", help="only values of these dtypes, comma-separated (default: all)")
    p.add_argument("--out", default="fuzz-out", type=_folder,
                   help="where findings and summary.txt go (default fuzz-out)")
    p.add_argument("--batch", type=_count, help="graphs compiled together as one program (default 48)")
    p.add_argument("--timeout", type=_seconds, help="seconds a worker may take for one batch (default 60), or with "
                   "--frontend for one program (default 10)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-minimize", action="store_true", help="save failures as found, without shrinking")
    p.add_argument("-O", "--opt", type=int, choices=range(4), default=0, metavar="N",
                   help="run the -O N pipeline, weights frozen, before lowering (default -O0: the graphs as drawn)")
    p.add_argument("--inject", help=argparse.SUPPRESS)  # TARGET:OP=TEMPLATE, a broken rule for self-tests
    p.set_defaults(func=cmd_fuzz)
    return parser


def quiet_frameworks(verbose: bool) -> None:
    """Frameworks' own logging off unless `verbose`: TensorFlow's C++ notices through its setting
    (XLA's at the first compile); what they write while importing, `codegen.frameworks` keeps."""
    if verbose:
        os.environ[VERBOSE_VARIABLE] = "1"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_frameworks(args.verbose)
    try:
        return args.func(args)
    except ShipeiError as e:
        print(e, file=sys.stderr)
        return 1
    except MemoryError:
        print("error: this machine's memory cannot hold what was asked for (a smaller model, batch or --dim)",
              file=sys.stderr)
        return 1
    except Exception as e:  # a bug in shipei, not the user's input
        if os.environ.get("SHIPEI_TRACEBACK"):
            traceback.print_exc()
        print(f"internal error: {type(e).__name__}: {e} (set SHIPEI_TRACEBACK=1 for details)", file=sys.stderr)
        return 2
