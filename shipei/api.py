"""The Python API: parse, compile, load and the reference interpreter, over the four layers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .codegen import GeneratedModule, emit, target_info
from .codegen.module import weights_filename
from .codegen.pipeline import pipeline_filename
from .frontend import elaborate_file, elaborate_source
from .frontend.limits import Limits
from .ir.errors import ShipeiError, whole_number
from .ir.graph import Graph
from .ir.init import init_params
from .ir.interpreter import Precision, interpret
from .ir.parser import parse_ir
from .ir.passes.context import PassSettings
from .ir.passes.manager import DEFAULT_OPT, PassContext, run_passes, select_passes
from .ir.passes.rewrite import clone
from .ir.pipeline import plan_pipeline
from .ir.printer import print_graph
from .ir.profile import Profile
from .ir.verifier import verify
from .partitioned import CompiledPipeline, DeviceMap, compile_pipeline, load_pipeline, partition_request
from .runtime import Executable, MemoryEstimate, estimate_memory
from .runtime.distributed import RayOptions
from .runtime.executable import process_folder
from .runtime.pipeline import Pipelined
from .runtime.weights import Weights, check_weights

Source = str | os.PathLike | Graph


def _is_path(src: str | os.PathLike) -> bool:
    return isinstance(src, os.PathLike) or ("\n" not in src and src.endswith(".sp"))


def _check_kind(value: Any, kinds: type | tuple[type, ...], what: str, spelled: str) -> None:
    """An argument Python would fail on deep inside (a list for a mapping, bytes for a path), as an
    error naming it; None is each one's default."""
    if value is not None and not isinstance(value, kinds):
        raise ShipeiError(f"{what} must be {spelled}, got {type(value).__name__} {value!r:.60}")


def _check_names(names: Any, what: str) -> None:
    """`passes` or `disable`: a list of pass names, where Python would read a string as one letter
    a pass ("unknown pass 'd'")."""
    if isinstance(names, str):
        raise ShipeiError(f"{what} must be a list of pass names, got the string {names!r}",
                          hint=f"{what}={names.split(',')!r}")
    if names is not None and (not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names)):
        raise ShipeiError(f"{what} must be a list of pass names, got {names!r:.60}")


def parse(src: Source, model: str | None = None, *, limits: Limits | None = None, method: str = "forward",
          **params: Any) -> Graph:
    """DSL source (a `.sp` path or the text itself) to a verified, typed IR graph.

    `model` picks a model when the file defines several (default: the last one); keyword
    arguments override the model's compile-time parameters, e.g. `parse(path, n_layers=2)`.
    `limits` bounds loop iterations and the graph's size (`shipei.Limits`; the defaults if None).
    `method="loss"` gives the graph of the model's loss method (what training makes small).
    """
    if isinstance(src, Graph):
        verify(src)
        return src
    if not isinstance(src, str | os.PathLike):
        raise ShipeiError(f"the source must be a .sp path, the model's text or an IR graph, got {type(src).__name__}")
    _check_kind(model, str, "model", "a model's name")
    _check_kind(limits, Limits, "limits", "a shipei.Limits")
    if _is_path(src):
        path = Path(src)
        if not path.exists():
            raise ShipeiError(f"no such file: {path}")
        graph = elaborate_file(path, model=model, params=params, bounds=limits, method=method)
    else:
        graph = elaborate_source(src, "<string>", model=model, params=params, bounds=limits, method=method)
    verify(graph)
    return graph


def _source_name(src: Source) -> str:
    """What a generated program's header names as its source: the file, also for a graph parsed
    from one (its nodes' locations say which), else `<string>` or `<graph>`."""
    if isinstance(src, Graph):
        return next((n.loc.file for n in src.nodes if n.loc is not None and not n.loc.file.startswith("<")),
                    "<graph>")
    return str(src) if _is_path(src) else "<string>"


@dataclass
class Compiled:
    """One model compiled for one target: its IR, generated program and initial weights."""

    ir: Graph
    target: str
    module: GeneratedModule
    weights: dict[str, np.ndarray] = field(repr=False)
    passes: PassContext | None = field(default=None, repr=False)  # timings, memory plan, reports

    @property
    def source(self) -> str:
        """The generated program's text."""
        return self.module.source

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the program, its weights (.safetensors) and the IR text; returns the program's path."""
        import safetensors.numpy

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / self.module.filename).write_text(self.source)
        (out / f"{self.ir.name.lower()}.ir").write_text(print_graph(self.ir))
        safetensors.numpy.save_file({k: np.asarray(v, order="C") for k, v in self.weights.items()},
                                    str(out / weights_filename(self.ir.name)))
        return out / self.module.filename

    def estimate_memory(self, **dims: int) -> MemoryEstimate:
        """Weights, inputs, activations and workspace at these shape symbols (`B=64`), before loading:
        activations as this target's program holds them (see `MemoryEstimate`)."""
        planned = self.passes is not None and self.passes.results.memory_plan is not None
        return estimate_memory(self.ir, dims, self.target, planned)

    def load(self, device: str = "auto", allow_fallback: bool = False, *, cast: bool = False,
             check_indices: bool = True) -> Executable:
        """Load the program on `device` ("auto" prefers the target's accelerator and falls back to
        the CPU with a warning; a device named and absent is an error unless `allow_fallback`).
        `cast` allows weights of another dtype of the same kind; `check_indices` checks each call's
        gather indices before the target sees them (see `Executable`)."""
        path = self.save(process_folder())
        return Executable(self.ir, self.target, path, self.weights, device, allow_fallback, cast=cast,
                          check_indices=check_indices)


def optimize(graph: Graph, opt: int = 2, *, passes: Sequence[str] | None = None, disable: Sequence[str] = (),
             pass_options: Mapping[str, Any] | None = None, context: PassContext | None = None) -> Graph:
    """Run the `-O{opt}` pipeline (or the `passes` named, in order), less `disable`, on `graph`
    in place. `pass_options` are settings the passes read (an unknown name is an error);
    `context` carries the weights (rewritten when `context.frozen`), dumps and timings; see
    `shipei.ir.passes.manager`. With `context.partition` set, the partition pass runs too, before
    the passes that work per program (layout, fuse, plan-memory)."""
    ctx = context or PassContext()
    if pass_options is not None:
        ctx.settings = PassSettings.parse(pass_options)
    names = select_passes(opt, passes, disable, ctx.frozen)
    if ctx.partition is not None and "partition" not in names:
        late = [i for i, name in enumerate(names) if name in ("layout", "fuse", "plan-memory")]
        names.insert(late[0] if late else len(names), "partition")
    return run_passes(graph, names, ctx)


def compile(src: Source, target: str = "torch", *, seed: int = 0, model: str | None = None,
            options: Mapping[str, Any] | None = None, opt: int = DEFAULT_OPT, passes: Sequence[str] | None = None,
            disable: Sequence[str] = (), freeze: bool = False, weights: Weights | None = None, cast: bool = False,
            pass_options: Mapping[str, Any] | None = None, context: PassContext | None = None,
            limits: Limits | None = None, device_map: DeviceMap | None = None, profile: Profile | None = None,
            **params: Any) -> Compiled | CompiledPipeline:
    """Compile DSL source (path or text) or an IR graph for `target`, with weights from `seed`.

    `opt` picks the pass pipeline (0 to 3), or `passes` names the passes to run; `disable` drops
    some. `weights` (a mapping or a .safetensors path) are checked as `load_weights` checks them,
    `cast` as there. `freeze=True` makes the weights (`weights`, else those of `seed`) part of the program:
    BatchNorm folding, freeze, quantize and prune rewrite them, and `Compiled.weights` holds the
    result. `pass_options` go to the passes (`{"dims": {"B": 8}}` for memory planning,
    `{"sparsity": 0.5}` for pruning); `context` may bring a `PassContext` for dumps and timings.
    `options` go to the target (e.g. `{"compute_dtype": "bf16"}` for jax); other keyword
    arguments override the model's compile-time parameters.

    `device_map` places parts of the model by module path, as Hugging Face accelerate spells it
    (`{"h.0": "torch:cpu", "h.1": "jax:cpu", "*": "tf:cpu"}`), or "auto" to choose among every
    placement this machine has; it, or a hint in the source naming another target or a device,
    partitions the model and returns a `CompiledPipeline` (one program per stage and a driver).
    The partitioner weighs nodes by `profile` where it measured them (`Profile.load` of what
    `shipei bench --profile` saved), else by its analytic cost model.
    """
    graph = parse(src, model=model, limits=limits, **params)
    if isinstance(src, Graph):
        graph = clone(graph)  # passes rewrite in place; the caller's graph stays as it was
    seed, opt = whole_number(seed, "seed"), whole_number(opt, "opt")
    _check_names(passes, "passes")
    _check_names(disable, "disable")
    disable = disable or ()
    for value, kinds, what, spelled in ((options, Mapping, "options", "a mapping"),
                                        (pass_options, Mapping, "pass_options", "a mapping"),
                                        (profile, Profile, "profile", "a shipei Profile")):
        _check_kind(value, kinds, what, spelled)
    if device_map is not None and device_map != "auto" and not isinstance(device_map, Mapping):
        raise ShipeiError(f"device_map must be a mapping of module path to placement, or 'auto', "
                          f"got {device_map!r:.60}")
    ctx = context or PassContext()
    # given weights are checked as load_weights checks them: the weight passes fold them as they are
    ctx.weights = check_weights(graph, weights, cast=cast) if weights is not None else init_params(graph, seed)
    ctx.frozen = freeze
    ctx.target = target_info(target)
    dims = dict(PassSettings.parse(pass_options).dims)
    ctx.partition = partition_request(graph, target, device_map, dims, profile)
    graph = optimize(graph, opt, passes=passes, disable=disable, pass_options=pass_options, context=ctx)
    if ctx.partition is not None:
        return compile_pipeline(graph, ctx, _source_name(src), {target: options or {}})
    module = emit(graph, target, _source_name(src), planned=ctx.results.memory_plan is not None,
                  prepare_weights=not ctx.settings.training,
                  **dict(options or {}))
    return Compiled(graph, target, module, ctx.weights, ctx)


def load(directory: str | os.PathLike, target: str = "torch", device: str = "auto", allow_fallback: bool = False,
         *, cast: bool = False, check_indices: bool = True, ray: RayOptions | bool | None = None
         ) -> Executable | Pipelined:
    """Load a directory written by `Compiled.save` (or `shipei compile -o DIR`); `cast` and
    `check_indices` as for `Compiled.load`. A partitioned model's directory (`--device-map`) loads
    as a pipeline, each stage on its placement (`target` and `device` are not used), in this
    process or with `ray` on Ray actors (see `CompiledPipeline.load`)."""
    directory = Path(directory)
    irs = sorted(directory.glob("*.ir"))
    if len(irs) != 1:
        raise ShipeiError(f"{directory} does not hold one compiled model (found {len(irs)} .ir files)")
    graph = parse_ir(irs[0].read_text(), str(irs[0]))
    driver = directory / pipeline_filename(graph.name)
    if driver.exists():
        plan = plan_pipeline(graph)
        weights = {k: v for s in plan.stages
                   for k, v in check_weights(s.graph, directory / weights_filename(s.graph.name)).items()}
        return load_pipeline(graph, plan, driver, weights, allow_fallback, check_indices=check_indices, ray=ray)
    module = directory / f"{graph.name.lower()}_{target}.py"
    if not module.exists():
        raise ShipeiError(f"{directory} has no program for target '{target}'",
                          hint=f"shipei compile FILE --target {target} -o {directory}")
    return Executable(graph, target, module, directory / weights_filename(graph.name), device, allow_fallback,
                      cast=cast, check_indices=check_indices)


def reference(graph: Graph, inputs: Sequence[Any], weights: Mapping[str, np.ndarray] | None = None,
              precision: Precision = "f64", seed: int = 0) -> list[np.ndarray]:
    """Run the numpy reference interpreter; weights default to those `compile(seed=seed)` makes."""
    return interpret(graph, inputs, init_params(graph, seed) if weights is None else weights, precision)
