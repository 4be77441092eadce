"""Weights as the runtime takes them, checked before any framework sees them.

Weights come from a .safetensors file or a name -> array mapping (a PyTorch state_dict works).
Either way `check_weights` holds them against the graph's params, so every target refuses the
same mistakes with the same message: an unexpected or missing name, a wrong shape, a wrong dtype.
Frameworks cast a weight of the wrong dtype silently (an int or complex array into a float
param), so a dtype must match exactly unless the caller asks for a cast.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.errors import ShipeiError, did_you_mean
from ..ir.graph import Graph, Value
from ..ir.interpreter import as_numpy
from ..ir.types import DType

Weights = Mapping[str, Any] | str | os.PathLike

#: How the first bytes of a file that is not safetensors say what it is: formats that unpickle.
_PICKLES = {b"\x80": "a pickle", b"PK": "a zip archive (torch.save)"}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file (bf16 as ml_dtypes' bfloat16). The format holds only
    a JSON header and raw bytes, so a file can never run code; one in another format (a pickle
    renamed, a truncated download) is an error naming the file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise ShipeiError(f"no weights file at {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        with path.open("rb") as f:
            head = f.read(2)
        kind = next((what for magic, what in _PICKLES.items() if head.startswith(magic)), None)
        raise ShipeiError(f"cannot read weights from {path}: not a safetensors file ({e})",
                          hint=kind and f"it is {kind}, which shipei never loads (unpickling runs code); "
                                        "save the weights with safetensors.torch.save_file or "
                                        "safetensors.numpy.save_file") from None


def read_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file (numpy.savez), read whole; object arrays are refused, as they
    unpickle. `what` says what the file holds, for the error a file that is not one gets."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it is one array (.npy), not arrays by name (.npz, numpy.savez)")
        with loaded:
            return dict(loaded)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as e:
        raise ShipeiError(f"cannot read {what} from {path}: {type(e).__name__}: {e}",
                          hint="save them with numpy.savez(path, name=array, ...)") from None


def check_weights(graph: Graph, weights: Weights, *, cast: bool = False) -> dict[str, np.ndarray]:
    """One array per param of `graph`, at its declared dtype, from a .safetensors path or a
    mapping. Names must match the params exactly, and so must shapes and dtypes, except that an
    integer may be stored narrower (quantize stores int8 for i32). `cast=True` allows numpy's
    "same_kind" casts (f64 to f32, f32 to bf16, int to float), never complex to real."""
    if isinstance(weights, (str, os.PathLike)):
        where, arrays = f"{weights}: ", read_safetensors(weights)
    elif isinstance(weights, Mapping):
        where, arrays = "", {key: as_numpy(value, "weight", str(key)) for key, value in weights.items()}
    else:
        raise ShipeiError(f"weights must be a .safetensors path or a mapping of name to array, got "
                          f"{type(weights).__name__}",
                          hint="pass a module's state_dict()" if hasattr(weights, "state_dict") else None)
    params = {p.name: p for p in graph.params}
    unexpected = sorted(str(k) for k in arrays if k not in params)
    missing = [name for name in params if name not in arrays]
    if unexpected or missing:
        raise ShipeiError(f"{where}weights do not match {graph.name}'s params: "
                          + "; ".join(filter(None, [unexpected and f"unexpected {', '.join(unexpected)}",
                                                    missing and f"missing {', '.join(missing)}"])),
                          hint=did_you_mean(unexpected[0], missing) if unexpected and missing else None)
    return {name: _conform(p, arrays[name], cast, where) for name, p in params.items()}


def _conform(p: Value, array: np.ndarray, cast: bool, where: str) -> np.ndarray:
    expected = p.dtype.numpy
    if not array.dtype.isnative:  # big-endian: the same numbers, swapped to this machine's order
        array = array.astype(array.dtype.newbyteorder("="))
    problem = f"{where}weight '{p.name}': expected {p.type}, got {_spelling(array.dtype)}{list(array.shape)}"
    if array.shape != tuple(p.shape):
        raise ShipeiError(problem)
    if array.dtype == expected:
        return array
    if array.dtype.kind in "iu" and expected.kind == "i" and np.can_cast(array.dtype, expected, "safe"):
        return array.astype(expected)  # stored narrower, widened without loss
    if array.dtype.kind == "c":
        raise ShipeiError(problem, hint="a complex weight has no real value to take: pass its real part")
    same_kind = np.can_cast(array.dtype, expected, "same_kind")
    if cast and same_kind:
        return array.astype(expected)
    raise ShipeiError(problem, hint="pass cast=True to convert it" if same_kind else
                      f"cast=True converts only within a kind (f64 to f32, int to float); convert it to "
                      f"{p.dtype} yourself if that is what you mean")


def _spelling(dtype: np.dtype) -> str:
    """A dtype as the DSL spells it where it has one (i32), else numpy's name (complex64)."""
    try:
        return DType.of_numpy(dtype).value
    except ShipeiError:
        return dtype.name
