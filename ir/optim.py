"""Optimizers as IR: shipei owns their mathematics, so every target takes the same step.

An optimizer's update is a graph built from the registry's ops (`update_graph`): for each
parameter its value, its gradient and its state (momentum, Adam's moments), and the step's scalars,
in; the new value and state, out. The reference interpreter runs it in numpy; each target lowers
it as it lowers a model, so the four frameworks agree step for step. The formulas follow
torch.optim's documentation, in the order torch's single-tensor implementations compute them,
and torch.optim is the oracle in the tests.

- SGD: g = grad + wd p; with momentum b = mu b + g (b = g on the first step), g = g + mu b
  (Nesterov) or b; p = p - lr g.
- Adam: g = grad + wd p; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
  p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
- AdamW: p = p (1 - lr wd) first (decoupled weight decay), then Adam without the L2 term.

The step's scalars (learning rate, bias corrections) are computed on the host in float64, as
torch computes them, and passed in as rank-0 inputs: one compiled update serves every step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ShipeiError
from .graph import Builder, Graph, Value
from .ops.rules import scalar
from .types import DType, TensorType

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class Optimizer:
    """An optimizer and its settings, with torch.optim's names and defaults."""

    name: str
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ShipeiError(f"unknown optimizer '{self.name}'", hint=f"optimizers are {', '.join(OPTIMIZERS)}")
        if not (0.0 <= self.betas[0] < 1.0 and 0.0 <= self.betas[1] < 1.0):
            raise ShipeiError(f"betas must lie in [0, 1), got {self.betas}")
        if self.eps < 0 or self.weight_decay < 0 or self.momentum < 0:
            raise ShipeiError("eps, weight_decay and momentum must not be negative")
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ShipeiError("nesterov needs SGD with momentum > 0")

    @classmethod
    def named(cls, name: str, **settings: float | bool | tuple[float, float]) -> Optimizer:
        """torch.optim's default weight decay: 0, but 0.01 for AdamW."""
        if name == "adamw":
            settings.setdefault("weight_decay", 0.01)
        return cls(name, **settings)

    @property
    def state(self) -> tuple[str, ...]:
        """The state each parameter carries, as torch.optim's state_dict names it."""
        if self.name == "sgd":
            return ("momentum_buffer",) if self.momentum else ()
        return ("exp_avg", "exp_avg_sq")

    def scalars(self, lr: float, step: int) -> dict[str, float]:
        """The rank-0 inputs of step `step` (1 for the first) at learning rate `lr`."""
        if not lr >= 0 or not math.isfinite(lr):  # a schedule may end at 0
            raise ShipeiError(f"the learning rate must not be negative, got {lr}")
        if self.name == "sgd":
            return {"lr": lr, "first": 1.0 if step == 1 else 0.0}
        b1, b2 = self.betas
        out = {"step_size": lr / (1 - b1**step), "correction2_sqrt": math.sqrt(1 - b2**step)}
        if self.name == "adamw":
            out["decay"] = 1 - lr * self.weight_decay
        return out


@dataclass
class UpdateGraph:
    """An optimizer's update for a list of parameters: the graph, and how its inputs and outputs
    line up with the parameters (`inputs`: per parameter its value, gradient and state names, in
    order; then the scalars)."""

    graph: Graph
    params: list[str]
    scalars: list[str]
    state: tuple[str, ...] = field(default_factory=tuple)


def update_graph(optimizer: Optimizer, params: Mapping[str, TensorType], scalar_dtype: DType = DType.f32,
                 name: str = "Update", clip_norm: float | None = None, loss_scaled: bool = False) -> UpdateGraph:
    """The graph of one step for parameters of these types: inputs `p{i}`, `g{i}` and the state
    per parameter, then the scalars; outputs the new value and state per parameter. With
    `clip_norm`, the gradients are first scaled by min(1, clip_norm / (norm + 1e-6)), their
    global L2 norm's (torch.nn.utils.clip_grad_norm_).

    With `loss_scaled` (float16 training, torch.amp.GradScaler's scheme), the gradients are of the
    loss times a scale: a last scalar input `inv_scale` unscales them first, and where any is not
    finite the step is skipped (the params and state come out as they went in); a last output says
    whether the step was taken, so that the trainer can lower the scale."""
    if clip_norm is not None and not clip_norm > 0:
        raise ShipeiError(f"clip_norm must be positive, got {clip_norm}")
    graph = Graph(name)
    b = Builder(graph)
    per_param = []
    for i, (pname, ptype) in enumerate(params.items()):
        if not ptype.dtype.is_float:
            raise ShipeiError(f"parameter {pname} of dtype {ptype.dtype} cannot be trained")
        values = [b.input(f"p{i}", ptype), b.input(f"g{i}", ptype)]
        values += [b.input(f"{s}{i}", ptype) for s in optimizer.state]
        per_param.append(values)
    scalars = {s: b.input(s, TensorType(scalar_dtype, ())) for s in optimizer.scalars(1.0, 1)}
    finite = None
    if loss_scaled:
        inv_scale = b.input("inv_scale", TensorType(scalar_dtype, ()))
        for values in per_param:
            values[1] = b("mul", values[1], _scalar(b, inv_scale, values[1]))
        finite = _all_finite(b, [values[1] for values in per_param])
    if clip_norm is not None:
        _clip(b, [values[1] for values in per_param], clip_norm, per_param)
    for values in per_param:
        new = _STEPS[optimizer.name](b, optimizer, values, scalars)
        kept = [values[0], *values[2:]]  # the value and state as they came in
        graph.outputs += new if finite is None else [b("where", finite, n, old) for n, old in zip(new, kept)]
    if finite is not None:
        graph.outputs.append(finite)
    graph.donated = frozenset(v.name for v in graph.inputs if v.type.rank)  # a step replaces them all
    return UpdateGraph(graph, list(params), [*scalars, *(["inv_scale"] if loss_scaled else [])], optimizer.state)


def _all_finite(b: Builder, grads: list[Value]) -> Value:
    """A bool scalar: whether every gradient element is finite (a sum of g * 0 is 0 exactly then,
    and NaN where any g is infinite or NaN)."""
    total = None
    for g in grads:
        part = _scalar(b, b("reduce_sum", b("mul", g, scalar(b, 0.0, g))), grads[0])
        total = part if total is None else b("add", total, part)
    return b("eq", total, scalar(b, 0.0, total))


def _clip(b: Builder, grads: list[Value], clip_norm: float, per_param: list[list[Value]]) -> None:
    """Scale every gradient (in `per_param`, in place) by min(1, clip_norm / (norm + 1e-6))."""
    squares = [_scalar(b, b("reduce_sum", b("mul", g, g)), grads[0]) for g in grads]
    total = squares[0]
    for square in squares[1:]:
        total = b("add", total, square)
    norm = b("sqrt", total)
    one = scalar(b, 1.0, norm)
    coef = b("minimum", b("div", scalar(b, clip_norm, norm), b("add", norm, scalar(b, 1e-6, norm))), one)
    for values in per_param:
        values[1] = b("mul", values[1], _scalar(b, coef, values[1]))


def _scalar(b: Builder, scalar: Value, like: Value) -> Value:
    """A scalar input at a parameter's dtype."""
    return scalar if scalar.dtype is like.dtype else b("cast", scalar, dtype=like.dtype)


def _l2(b: Builder, opt: Optimizer, p: Value, g: Value) -> Value:
    return b("add", g, b("mul", p, scalar(b, opt.weight_decay, p))) if opt.weight_decay else g


def _sgd(b: Builder, opt: Optimizer, values: list[Value], scalars: dict[str, Value]) -> list[Value]:
    p, g, *state = values
    g = _l2(b, opt, p, g)
    out_state = []
    if opt.momentum:
        (buf,) = state
        first = _scalar(b, scalars["first"], p)  # 1 on the first step: the buffer starts as the gradient
        kept = b("mul", buf, b("mul", scalar(b, opt.momentum, p), b("sub", scalar(b, 1.0, p), first)))
        buf = b("add", kept, g)
        g = b("add", g, b("mul", buf, scalar(b, opt.momentum, p))) if opt.nesterov else buf
        out_state.append(buf)
    return [b("sub", p, b("mul", g, _scalar(b, scalars["lr"], p))), *out_state]


def _adam(b: Builder, opt: Optimizer, values: list[Value], scalars: dict[str, Value]) -> list[Value]:
    p, g, m, v = values
    b1, b2 = opt.betas
    if opt.name == "adamw":
        p = b("mul", p, _scalar(b, scalars["decay"], p))
    else:
        g = _l2(b, opt, p, g)
    # v before m: g's last reader is then m's update, which an eager target computes over g
    v = b("add", b("mul", v, scalar(b, b2, p)), b("mul", b("mul", g, g), scalar(b, 1 - b2, p)))
    m = _lerp(b, m, g, 1 - b1)
    denom = b("add", b("div", b("sqrt", v), _scalar(b, scalars["correction2_sqrt"], p)), scalar(b, opt.eps, p))
    p = b("sub", p, b("mul", b("div", m, denom), _scalar(b, scalars["step_size"], p)))
    return [p, m, v]


def _lerp(b: Builder, start: Value, end: Value, weight: float) -> Value:
    """start + weight (end - start), computed as torch.lerp computes it for a scalar weight."""
    if weight < 0.5:
        return b("add", start, b("mul", b("sub", end, start), scalar(b, weight, start)))
    return b("sub", end, b("mul", b("sub", end, start), scalar(b, 1 - weight, start)))


_STEPS = {"sgd": _sgd, "adam": _adam, "adamw": _adam}
