"""Checking a forward signature against the tensors it is called with and returns.

Dim names that are not compile-time values in the layer's scope are signature symbols: they
bind to the actual dims on first use and must agree afterwards, across arguments and returns.
A leading `...` matches any number of leading dims, and the same leading dims in the return
type. Mismatches are reported as "expected f32[B, 256], got f32[B, 128]".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..ir.errors import ShipeiError, SourceLoc
from ..ir.graph import Value
from ..ir.types import Dim, DType, TensorType, format_dim
from . import ast
from .scope import Scope

ELLIPSIS = "..."
DimEval = Callable[[Any, Any, Any], Dim]


def _render(t: ast.TensorTypeExpr, bound: dict[str, Any], eval_dim: DimEval, scope: Any) -> str:
    """The declared type with what is known substituted, for messages."""
    parts = []
    for d in t.dims:
        if isinstance(d, ast.EllipsisLit):
            parts.extend(format_dim(x) for x in bound.get(ELLIPSIS, ())) if ELLIPSIS in bound else parts.append("...")
            continue
        try:
            parts.append(format_dim(eval_dim(d, _with(scope, bound), None)))
        except ShipeiError:
            parts.append(d.id if isinstance(d, ast.Name) else "?")
    return f"{t.dtype}[{', '.join(parts)}]"


def _with(scope: Any, bound: dict[str, Any]) -> Any:
    child = Scope(scope)
    child.names.update({k: v for k, v in bound.items() if k != ELLIPSIS})
    return child


def _unify(t: ast.TensorTypeExpr, actual: TensorType, bound: dict[str, Any], scope: Any,
           eval_dim: DimEval) -> bool:
    """Bind symbols of `t` to `actual`; False when they cannot agree."""
    if DType.parse(t.dtype) != actual.dtype:
        return False
    dims = list(t.dims)
    shape = list(actual.shape)
    if dims and isinstance(dims[0], ast.EllipsisLit):
        dims = dims[1:]
        if len(shape) < len(dims):
            return False
        lead = tuple(shape[:len(shape) - len(dims)])
        if bound.setdefault(ELLIPSIS, lead) != lead:
            return False
        shape = shape[len(shape) - len(dims):]
    if len(dims) != len(shape):
        return False
    deferred = []
    for d, a in zip(dims, shape):
        if isinstance(d, ast.Name) and d.id not in bound and not _known(scope, d.id):
            bound[d.id] = a
        else:
            deferred.append((d, a))
    for d, a in deferred:
        try:
            if eval_dim(d, _with(scope, bound), None) != a:
                return False
        except ShipeiError:
            return False
    return True


def _known(scope: Any, name: str) -> bool:
    try:
        scope.lookup(name)
        return True
    except KeyError:
        return False


def bind_signature(method: ast.Method, values: Sequence[Value], scope: Any, eval_dim: DimEval,
                   loc: SourceLoc, who: str) -> dict[str, Any]:
    """Names the forward body sees: its arguments and the symbols their types bound."""
    if len(values) != len(method.args):
        raise ShipeiError(f"{who} takes {len(method.args)} tensor(s), got {len(values)}", loc,
                          hint="forward(" + ", ".join(a.name for a in method.args) + ")")
    bound: dict[str, Any] = {}
    for arg, value in zip(method.args, values):
        if not _unify(arg.type, value.type, bound, scope, eval_dim):
            expected = _render(arg.type, bound, eval_dim, scope)
            raise ShipeiError(f"{who}: argument '{arg.name}' expects {expected}, got {value.type}", loc,
                              hint=f"expected {expected}, got {value.type}")
    names = {k: v for k, v in bound.items() if k != ELLIPSIS}
    if ELLIPSIS in bound:
        names[ELLIPSIS] = bound[ELLIPSIS]
    names.update({arg.name: value for arg, value in zip(method.args, values)})
    return names


def check_returns(method: ast.Method, values: Sequence[Value], scope: Any, eval_dim: DimEval,
                  loc: SourceLoc, who: str) -> None:
    """Returned tensors must match the declared return types; fresh names there bind to them."""
    if len(values) != len(method.returns):
        raise ShipeiError(f"{who} returns {len(values)} value(s) but declares {len(method.returns)}", loc)
    bound = {ELLIPSIS: scope.names[ELLIPSIS]} if ELLIPSIS in scope.names else {}
    for t, value in zip(method.returns, values):
        probe = dict(bound)
        if not _unify(t, value.type, probe, scope, eval_dim):
            expected = _render(t, bound, eval_dim, scope)
            raise ShipeiError(f"{who} returns {value.type} but declares {expected}", loc,
                              hint=f"expected {expected}, got {value.type}")
        bound = probe
