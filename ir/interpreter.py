"""The reference interpreter: runs a graph with each op's numpy reference. It is the spec.

Two precisions: "declared" computes each op at its declared dtype (f16/bf16 ops compute in f32
and round the result, as the frameworks do); "f64" carries every float in float64, the oracle
that targets are compared against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np

from .errors import ShipeiError
from .graph import Graph, Value
from .registry import AttrKind, get_op
from .types import DType, Sym, TensorType, eval_dim

Precision = Literal["declared", "f64"]


def bind_symbols(graph: Graph, arrays: Sequence[np.ndarray]) -> dict[str, int]:
    """Symbol values from the actual input shapes; a mismatch is a clear error naming the input."""
    if len(arrays) != len(graph.inputs):
        raise ShipeiError(f"{graph.name} takes {len(graph.inputs)} inputs "
                          f"({', '.join(v.name for v in graph.inputs)}), got {len(arrays)}")
    env: dict[str, int] = {}
    for value, array in zip(graph.inputs, arrays):
        _bind(value, np.shape(array), env)
    for value, array in zip(graph.inputs, arrays):
        _solve(value, np.shape(array), env)
    for value, array in zip(graph.inputs, arrays):
        expected = tuple(eval_dim(d, env) for d in value.shape)
        if expected != np.shape(array):
            raise ShipeiError(f"input '{value.name}': expected {value.type} = {list(expected)}, "
                              f"got shape {list(np.shape(array))}")
    return env


def _bind(value: Value, shape: tuple[int, ...], env: dict[str, int]) -> None:
    if len(shape) != value.type.rank:
        raise ShipeiError(f"input '{value.name}': expected {value.type} (rank {value.type.rank}), "
                          f"got shape {list(shape)}")
    for dim, actual in zip(value.shape, shape):
        if isinstance(dim, Sym) and len(dim.terms) == 1 and dim.terms[0][1] == 1 and len(dim.terms[0][0]) == 1:
            name = dim.terms[0][0][0]
            if env.setdefault(name, actual) != actual:
                raise ShipeiError(f"input '{value.name}': symbol {name} is {env[name]} elsewhere but {actual} here")


def _solve(value: Value, shape: tuple[int, ...], env: dict[str, int]) -> None:
    """Bind symbols that appear only in linear dims such as `2*B + 1`."""
    for dim, actual in zip(value.shape, shape):
        unbound = [s for s in getattr(dim, "symbols", ()) if s not in env]
        if not unbound:
            continue
        terms = dict(dim.terms)
        sym = unbound[0]
        coeff = terms.get((sym,))
        rest = {m: c for m, c in terms.items() if m != (sym,)}
        known = sum(c * int(np.prod([env[s] for s in m])) for m, c in rest.items()) if all(
            s in env for m in rest for s in m) else None
        if len(unbound) > 1 or coeff is None or known is None or (actual - known) % coeff:
            raise ShipeiError(f"input '{value.name}': cannot infer symbol {sym} from dim {dim} = {actual}")
        env[sym] = (actual - known) // coeff


def as_numpy(value: Any, kind: str, name: str | int) -> np.ndarray:
    """An array-like as numpy: a torch tensor detached and on the CPU (bfloat16, which numpy lacks,
    through float32: exact); a ragged list, or a tensor with no data, is an error naming the
    `kind` ("input", "weight") and its name (or position)."""
    try:
        if hasattr(value, "detach"):
            value = value.detach().to_dense().cpu()
            if str(value.dtype) == "torch.bfloat16":
                return value.float().numpy().astype(DType.bf16.numpy)
            value = value.numpy()
        return np.asarray(value)
    except (TypeError, ValueError, NotImplementedError, RuntimeError) as e:  # ragged; a meta tensor has no data
        named = f"'{name}'" if isinstance(name, str) else f"#{name}"
        raise ShipeiError(f"{kind} {named}: not an array ({type(e).__name__}: {e})") from None


def as_arrays(graph: Graph, inputs: Sequence[Any]) -> list[np.ndarray]:
    """Each input as numpy, as it comes (`as_numpy`); every call of a model pays it, so the name
    is only spelled out for an error."""
    known = graph.inputs
    return [as_numpy(a, "input", known[i].name if i < len(known) else i) for i, a in enumerate(inputs)]


def coerce_input(value: Value, array: Any) -> np.ndarray:
    """An input array at the declared dtype, C-contiguous; lossy kind changes (float to int) are
    refused. Arrays laid out otherwise (`x[::-1]`, `x.T`) are copied: frameworks take an array's
    memory as it is, and torch refuses negative strides."""
    array = np.asarray(array)
    target = value.dtype.numpy
    if array.dtype != target:
        if not np.can_cast(array.dtype, target, "same_kind"):
            raise ShipeiError(f"input '{value.name}': expected {value.type.dtype}, got {array.dtype}")
        array = _narrowed(value, array, target)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _narrowed(value: Value, array: np.ndarray, target: np.dtype) -> np.ndarray:
    """`array` cast to `target`, refusing what would not survive it: an integer outside the
    narrower integer's range (int64 2**31 to int32 wraps to -2**31), a finite number that becomes
    an infinite float (1e300 to float32, 70000 to float16)."""
    if target.kind in "iu" and array.dtype.kind in "iu" and array.size:
        info = np.iinfo(target)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise ShipeiError(f"input '{value.name}': {low if low < info.min else high} does not fit "
                              f"{value.type.dtype} (from {array.dtype})")
    try:
        with np.errstate(over="raise"):  # the cast itself says so: no pass over the result
            return array.astype(target, copy=False)
    except FloatingPointError:
        with np.errstate(over="ignore"):
            overflowed = np.isinf(array.astype(target)) & np.isfinite(array)
        raise ShipeiError(f"input '{value.name}': {array[overflowed].flat[0].item()!r} is past "
                          f"{value.type.dtype}'s range (from {array.dtype})") from None


def resolve_attrs(opname: str, attrs: dict[str, Any], env: dict[str, int]) -> dict[str, Any]:
    """Attributes with symbolic dims replaced by their values under `env`."""
    specs = get_op(opname).attrs
    out = dict(attrs)
    try:
        for name, spec in specs.items():
            if spec.kind is AttrKind.DIM:
                out[name] = eval_dim(attrs[name], env)
            elif spec.kind is AttrKind.DIMS:
                out[name] = tuple(eval_dim(d, env) for d in attrs[name])
    except KeyError as e:
        raise ShipeiError(f"{opname}: symbol {e.args[0]} is not bound by any input shape") from None
    return out


def _compute_dtype(t: TensorType, precision: Precision) -> np.dtype:
    if not t.dtype.is_float:
        return t.dtype.numpy
    if precision == "f64":
        return np.dtype(np.float64)
    return np.dtype(np.float32) if t.dtype in (DType.f16, DType.bf16) else t.dtype.numpy


def interpret(graph: Graph, inputs: Sequence[Any], weights: Mapping[str, np.ndarray],
              precision: Precision = "declared",
              perturb: Callable[[Value, np.ndarray], np.ndarray] | None = None,
              symbols: Mapping[str, int] | None = None) -> list[np.ndarray]:
    """Run `graph` on numpy inputs and named weights; returns one array per output.

    `perturb`, if given, replaces each op's result (after rounding) by `perturb(value, array)`:
    how the property tests ask whether rounding differences upstream could move an output.
    `symbols` gives shape symbols that the inputs do not bind: those of the larger graph that
    `graph` is a part of (see `ir.subgraph`)."""
    if precision not in get_args(Precision):
        raise ShipeiError(f"unknown precision {precision!r}: the reference computes at the declared dtypes or f64")
    inputs = as_arrays(graph, inputs)
    env = {**(symbols or {}), **bind_symbols(graph, inputs)}
    arrays = [coerce_input(v, a) for v, a in zip(graph.inputs, inputs)]
    values: dict[Value, np.ndarray] = {}
    for v, a in zip(graph.inputs, arrays):
        values[v] = a.astype(_compute_dtype(v.type, precision))
    for p in graph.params:
        if p.name not in weights:
            raise ShipeiError(f"no weight given for param '{p.name}'")
        w = np.asarray(weights[p.name])
        if w.shape != tuple(p.shape):
            raise ShipeiError(f"weight '{p.name}': expected {p.type}, got shape {list(w.shape)}")
        values[p] = w.astype(p.dtype.numpy).astype(_compute_dtype(p.type, precision))
    for node in graph.nodes:
        opdef = get_op(node.op)
        args = [values[v] for v in node.operands]
        attrs = resolve_attrs(node.op, node.attrs, env)
        with np.errstate(all="ignore"):  # inf and nan are values here, as in the frameworks
            outs = empty_arrays(node.results, env)
            if outs is None:
                out = opdef.reference(*args, **attrs)
                outs = out if isinstance(out, tuple) else (out,)
            for result, array in zip(node.results, outs):
                array = np.asarray(array)
                if precision == "declared" or not result.dtype.is_float:
                    array = array.astype(result.dtype.numpy)  # round as the declared dtype would
                values[result] = array.astype(_compute_dtype(result.type, precision))
                if perturb is not None:
                    values[result] = perturb(result, values[result])
    return [values[v] if precision == "f64" else values[v].astype(v.dtype.numpy) for v in graph.outputs]


def empty_arrays(values: Sequence[Value], env: Mapping[str, int]) -> list[np.ndarray] | None:
    """Arrays for `values` when every one has no elements (a sequence of length 0), else None.
    Such results need no computing, and computing them can fail where nothing is wrong: softmax's
    reference reduces along an axis that is then empty, which numpy refuses, and so do some
    frameworks' kernels (MindSpore's CPU LayerNorm)."""
    try:
        shapes = [tuple(eval_dim(d, env) for d in v.shape) for v in values]
    except KeyError:  # a symbol that no input binds: only computing tells the shape
        return None
    if not shapes or any(0 not in shape for shape in shapes):
        return None
    return [np.zeros(shape, v.dtype.numpy) for shape, v in zip(shapes, values)]
