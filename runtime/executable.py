"""Load a generated module, bind weights, pick a device and run it with numpy in and out."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..codegen import get_target
from ..ir.errors import ShipeiError
from ..ir.graph import Graph
from ..ir.interpreter import bind_symbols, coerce_input
from .memory import MemoryEstimate, estimate_memory

#: What users may write for a device, per target's own spelling.
DEVICE_ALIASES = {"gpu": "cuda", "npu": "ascend"}

_counter = itertools.count()


class DeviceFallbackWarning(UserWarning):
    """A model runs on CPU because its target's preferred accelerator is absent."""


def require_framework(target: str) -> None:
    """A clear error naming the extra to install when a target's framework is missing."""
    t = get_target(target)
    if importlib.util.find_spec(t.framework) is None:
        raise ShipeiError(f"target '{target}' needs {t.framework}, which is not installed",
                          hint=f"pip install 'shipei[{t.extra}]'")


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


class Executable:
    """A compiled model loaded on one device; call it with numpy arrays.

    `device` says where it runs; `fell_back` is True when it runs on CPU for want of the
    accelerator its target prefers.
    """

    def __init__(self, graph: Graph, target: str, module_path: Path, weights: Mapping[str, np.ndarray] | Path,
                 device: str = "auto", allow_fallback: bool = True):
        require_framework(target)
        self.graph = graph
        self.target = target
        self.module = import_module_file(module_path)
        self.device, self.fell_back = choose_device(self.module.available_devices(), device, target,
                                                    allow_fallback)
        self._model = self.module.load(str(weights) if isinstance(weights, Path) else dict(weights), self.device)

    def load_weights(self, mapping: Mapping[str, Any]) -> None:
        """Replace the weights by name (a PyTorch state_dict works); names and shapes are checked."""
        arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in mapping.items()}
        expected = {p.name: p for p in self.graph.params}
        unknown = sorted(set(arrays) - set(expected))
        missing = sorted(set(expected) - set(arrays))
        if unknown or missing:
            raise ShipeiError("weights do not match the model's params: "
                              + "; ".join(filter(None, [unknown and f"unexpected {', '.join(unknown)}",
                                                        missing and f"missing {', '.join(missing)}"])))
        for name, p in expected.items():
            if arrays[name].shape != tuple(p.shape):
                raise ShipeiError(f"weight '{name}': expected {p.type}, got shape {list(arrays[name].shape)}")
        self._model = self.module.load({k: arrays[k].astype(expected[k].dtype.numpy) for k in arrays}, self.device)

    def run(self, *inputs: Any) -> list[np.ndarray]:
        """All outputs as a list of numpy arrays at their declared dtypes."""
        bind_symbols(self.graph, [np.asarray(a) for a in inputs])
        arrays = [coerce_input(v, a) for v, a in zip(self.graph.inputs, inputs)]
        outputs = self.module.run(self._model, arrays, self.device)
        return [np.asarray(y).astype(v.dtype.numpy, copy=False) for y, v in zip(outputs, self.graph.outputs)]

    def estimate_memory(self, **dims: int) -> MemoryEstimate:
        """Weights, inputs and planned activations at these shape symbols, e.g. `B=64`."""
        return estimate_memory(self.graph, dims)

    def __call__(self, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """One array for a one-output model, else a tuple, as the frameworks return."""
        outputs = self.run(*inputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self) -> str:
        return f"Executable({self.graph.name}, target={self.target!r}, device={self.device!r})"
