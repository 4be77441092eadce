"""Load a generated module, bind weights, pick a device and run it with numpy in and out.

Everything a target would do differently with bad input is checked here first, so the four
behave the same through this facade: weights (`runtime.weights`), input shapes and dtypes, and
gather indices (`runtime.indices`). The framework is imported with a timeout
(`codegen.frameworks`) before the generated module is.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..codegen.frameworks import require_framework
from ..codegen.module import GeneratedModule
from ..ir.errors import ShipeiError
from ..ir.graph import Graph
from ..ir.interpreter import as_arrays, bind_symbols, coerce_input, empty_arrays
from .indices import IndexCheck
from .measure import ready
from .memory import MemoryEstimate, estimate_memory
from .weights import Weights, check_weights
from .workers import scratch_folder

#: What users may write for a device, per target's own spelling.
DEVICE_ALIASES = {"gpu": "cuda", "npu": "ascend"}

_counter = itertools.count()


class DeviceFallbackWarning(UserWarning):
    """A model runs on CPU because its target's preferred accelerator is absent."""


def process_folder() -> Path:
    """A new folder inside one that is removed when the process ends: a loaded program's files
    must outlive its loading (frameworks that compile Python read a function's source back from
    its file at each new shape), and must not outlive the process. In a worker process, inside
    the folder its parent named ($SHIPEI_SCRATCH), which the parent removes."""
    global _GENERATED
    if _GENERATED is None:
        _GENERATED = tempfile.TemporaryDirectory(prefix="shipei-generated-", dir=scratch_folder())
    return Path(tempfile.mkdtemp(dir=_GENERATED.name))


def write_generated(module: GeneratedModule) -> Path:
    """A generated module's source in a file of its own, in a `process_folder`."""
    path = process_folder() / module.filename
    path.write_text(module.source)
    return path


def import_generated(module: GeneratedModule) -> ModuleType:
    """A generated module, imported from its source (`write_generated`)."""
    return import_module_file(write_generated(module))


_GENERATED: tempfile.TemporaryDirectory | None = None


def import_module_file(path: Path) -> ModuleType:
    """Import a generated module from its file under a unique name."""
    spec = importlib.util.spec_from_file_location(f"shipei_generated_{next(_counter)}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # frameworks that compile Python (ms.jit) import a function's module by name
    spec.loader.exec_module(module)
    return module


def choose_device(available: list[str], requested: str, target: str, allow_fallback: bool) -> tuple[str, bool]:
    """(device, fell_back). "auto" takes the first available; a missing device is an error
    unless fallback is allowed, and a fallback to CPU always warns."""
    if not isinstance(requested, str):
        raise ShipeiError(f"a device is a name such as 'cpu', 'cuda:1' or 'auto', got {type(requested).__name__}")
    if requested not in available:
        requested = DEVICE_ALIASES.get(requested, requested)
    if requested == "auto":
        device = available[0]
        if device == "cpu":
            warnings.warn(f"no accelerator found for target '{target}'; running on CPU",
                          DeviceFallbackWarning, stacklevel=3)
        return device, device == "cpu"
    if requested in available:
        return requested, False
    if not allow_fallback:
        raise ShipeiError(f"device '{requested}' is not available to target '{target}'",
                          hint=f"available: {', '.join(available)}; pass allow_fallback=True to use CPU")
    warnings.warn(f"device '{requested}' is not available to target '{target}'; running on CPU",
                  DeviceFallbackWarning, stacklevel=3)
    return "cpu", True


def checked_inputs(graph: Graph, inputs: Sequence[Any], indices: IndexCheck | None,
                   bound: dict[tuple, Binding] | None = None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """`inputs` at their declared dtypes, their shapes bound and their gather indices checked (with
    `indices`), and the outputs when there is nothing to compute (a sequence of length 0, which some
    kernels refuse), else None. `bound` remembers what each tuple of input shapes binds, for a caller
    that checks every call: binding is Python code (8 of the 11 us these checks took a call of the
    example MLP), and a deployed model sees few shapes."""
    arrays = as_arrays(graph, inputs)
    shapes = tuple(a.shape for a in arrays)
    binding = bound.get(shapes) if bound is not None else None
    if binding is None:
        env = bind_symbols(graph, arrays)
        binding = Binding(env, empty_arrays(graph.outputs, env))
        if bound is not None:
            if len(bound) >= _SHAPES_REMEMBERED:
                bound.clear()
            bound[shapes] = binding
    arrays = [coerce_input(v, a) for v, a in zip(graph.inputs, arrays)]
    if indices is not None:
        indices.check(arrays, binding.env)
    return arrays, None if binding.empty is None else [a.copy() for a in binding.empty]


class Binding(NamedTuple):
    """What one tuple of input shapes binds: the shape symbols, and the outputs where they are empty."""

    env: dict[str, int]
    empty: list[np.ndarray] | None


_SHAPES_REMEMBERED = 64  # more, and a caller's shapes are forgotten and bound again


def declared(graph: Graph, outputs: Sequence[Any]) -> list[np.ndarray]:
    """A program's outputs as numpy arrays at the graph's declared dtypes."""
    return [np.asarray(y).astype(v.dtype.numpy, copy=False) for y, v in zip(outputs, graph.outputs)]


class Executable:
    """A compiled model loaded on one device; call it with numpy arrays.

    `device` says where it runs; `fell_back` is True when it runs on CPU for want of the
    accelerator its target prefers. `weights` is a .safetensors path or a name -> array mapping,
    checked against the graph's params before the framework sees it: dtypes must match unless
    `cast=True` (see `runtime.weights.check_weights`). With `check_indices` (the default) every
    call's gather indices are checked against their tables first (see `runtime.indices`).
    """

    def __init__(self, graph: Graph, target: str, module_path: Path, weights: Weights, device: str = "auto",
                 allow_fallback: bool = False, *, cast: bool = False, check_indices: bool = True):
        arrays = check_weights(graph, weights, cast=cast)
        require_framework(target)
        self.graph = graph
        self.target = target
        self.module = import_module_file(module_path)
        self.device, self.fell_back = choose_device(self.module.available_devices(), device, target,
                                                    allow_fallback)
        self._model = self.module.load(arrays, self.device)
        self._indices = IndexCheck.build(graph, arrays) if check_indices else None
        self._bound: dict[tuple, Binding] = {}  # input shapes -> what they bind (`checked_inputs`)

    def load_weights(self, weights: Weights, *, cast: bool = False) -> None:
        """Replace the weights: a .safetensors path or a name -> array mapping (a PyTorch
        state_dict works), checked as at load; a rejected one leaves the model as it was."""
        arrays = check_weights(self.graph, weights, cast=cast)
        self._model = self.module.load(arrays, self.device)
        if self._indices is not None:
            self._indices = IndexCheck.build(self.graph, arrays)

    def run(self, *inputs: Any) -> list[np.ndarray]:
        """All outputs as a list of numpy arrays at their declared dtypes."""
        arrays, empty = checked_inputs(self.graph, inputs, self._indices, self._bound)
        if empty is not None:
            return empty
        return declared(self.graph, self.module.run(self._model, arrays, self.device))

    def prepared(self, *inputs: Any) -> Callable[[], list[np.ndarray]]:
        """A call of the generated program on `inputs`, checked once here: numpy in and numpy out
        as `run`, without `run`'s per-call checks. What a deployed caller pays per call, and what
        `shipei bench` times. It runs the weights bound when it is called (`load_weights`)."""
        arrays, empty = checked_inputs(self.graph, inputs, self._indices)
        if empty is not None:
            return lambda: empty
        run, device = self.module.run, self.device
        return lambda: run(self._model, arrays, device)

    def native(self, *inputs: Any) -> Callable[[], None]:
        """A call of the program's own `call` on the framework's tensors, made once from `inputs`,
        waited for (jax returns before it has computed): what its ops cost in the framework, without
        numpy in and out. What `shipei bench --profile` times. It runs the weights bound when it is
        called, as `prepared`."""
        arrays, _ = checked_inputs(self.graph, inputs, self._indices)
        module = self.module
        tensors = [module.accept(x, self.device)[0] for x in arrays]
        return lambda: ready(module.call(self._model, *tensors))

    def estimate_memory(self, **dims: int) -> MemoryEstimate:
        """Weights, inputs, activations and workspace at these shape symbols, e.g. `B=64`, as this
        target's program holds them; fused groups say the program was emitted with the memory plan
        (only -O3 forms groups, and it plans memory)."""
        return estimate_memory(self.graph, dims, self.target, planned=bool(self.graph.groups()))

    def __call__(self, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """One array for a one-output model, else a tuple, as the frameworks return."""
        outputs = self.run(*inputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self) -> str:
        return f"Executable({self.graph.name}, target={self.target!r}, device={self.device!r})"
