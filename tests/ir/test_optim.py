"""shipei's optimizers and schedules take torch.optim's steps (torch.optim is the oracle): the
update graph, run by the reference interpreter in float64 for 50 steps on given gradients, lands
where torch.optim does, to float64 rounding; the schedules give torch's learning rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shipei.ir.errors import ShipeiError
from shipei.ir.interpreter import interpret
from shipei.ir.optim import Optimizer, update_graph
from shipei.ir.schedule import Schedule
from shipei.ir.types import DType, TensorType

SHAPES = {"fc.weight": (4, 3), "fc.bias": (3,), "conv.weight": (2, 2, 2)}
STEPS = 50

CONFIGS = {
    "sgd": (Optimizer("sgd"), lambda ps, lr: torch.optim.SGD(ps, lr=lr)),
    "sgd-momentum": (Optimizer("sgd", momentum=0.9), lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9)),
    "sgd-nesterov-wd": (Optimizer("sgd", momentum=0.8, nesterov=True, weight_decay=1e-2),
                        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.8, nesterov=True, weight_decay=1e-2)),
    "adam": (Optimizer("adam"), lambda ps, lr: torch.optim.Adam(ps, lr=lr)),
    "adam-wd": (Optimizer("adam", betas=(0.8, 0.99), weight_decay=1e-3),
                lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.8, 0.99), weight_decay=1e-3)),
    "adamw": (Optimizer.named("adamw"), lambda ps, lr: torch.optim.AdamW(ps, lr=lr)),
}


def _ours(optimizer: Optimizer, schedule: Schedule, params: dict[str, np.ndarray],
          grads: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    update = update_graph(optimizer, {k: TensorType(DType.f64, v.shape) for k, v in params.items()}, DType.f64)
    params = dict(params)
    state = {(k, s): np.zeros_like(v) for k, v in params.items() for s in optimizer.state}
    for t in range(STEPS):
        inputs = [x for k in update.params
                  for x in (params[k], grads[t][k], *(state[k, s] for s in optimizer.state))]
        inputs += [np.float64(v) for v in optimizer.scalars(schedule.rate(t), t + 1).values()]
        out = iter(interpret(update.graph, inputs, {}))
        for k in update.params:
            params[k] = next(out)
            state.update({(k, s): next(out) for s in optimizer.state})
    return params


def _torch(make, schedule: Schedule, params: dict[str, np.ndarray],
           grads: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make(list(tensors.values()), schedule.rate(0))
    for t in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = schedule.rate(t)
        for k, p in tensors.items():
            p.grad = torch.tensor(grads[t][k])
        opt.step()
    return {k: p.detach().numpy() for k, p in tensors.items()}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_fifty_steps_land_where_torch_optim_does(config: str) -> None:
    optimizer, make = CONFIGS[config]
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(STEPS)]
    schedule = Schedule("cosine", 0.05, total=STEPS - 10, warmup=10)
    ours, theirs = _ours(optimizer, schedule, params, grads), _torch(make, schedule, params, grads)
    for k in SHAPES:
        moved = np.abs(theirs[k] - params[k]).max()
        assert moved > 1e-3, f"{config}: {k} hardly moved"
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=1e-14, err_msg=f"{config}: {k}")


def _torch_rates(make, lr: float, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make(opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(("schedule", "make"), [
    (Schedule("step", 0.1, step_size=7, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5)),
    (Schedule("cosine", 0.1, total=30, eta_min=1e-3),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 30, eta_min=1e-3)),
    (Schedule("constant", 0.1, warmup=9),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 10, total_iters=9)),
], ids=["step", "cosine", "warmup"])
def test_schedules_give_torchs_rates(schedule: Schedule, make) -> None:
    """Over the cosine's T steps and past them; after T, torch's cosine rises again and shipei's
    stays at eta_min (as a run's schedule ends with the run), so the cosine is compared to T."""
    steps = schedule.total + 1 if schedule.name == "cosine" else 40
    np.testing.assert_allclose([schedule.rate(t) for t in range(steps)], _torch_rates(make, 0.1, steps), rtol=1e-9)
    if schedule.name == "cosine":
        assert schedule.rate(schedule.total + 5) == schedule.eta_min


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Optimizer("lamb"), "unknown optimizer 'lamb'"),
    (lambda: Optimizer("sgd", nesterov=True), "nesterov needs SGD with momentum > 0"),
    (lambda: Optimizer("adam", betas=(0.9, 1.0)), "betas must lie in \\[0, 1\\)"),
    (lambda: Optimizer("adam").scalars(-1e-3, 1), "the learning rate must not be negative, got -0.001"),
    (lambda: Schedule("cosine", 1e-3), "a cosine schedule needs its total steps"),
    (lambda: Schedule("constant", -1.0), "the learning rate must be positive, got -1.0"),
    (lambda: Schedule("linear", 1e-3), "unknown schedule 'linear'"),
])
def test_bad_settings_are_clear_errors(make, message: str) -> None:
    with pytest.raises(ShipeiError, match=message):
        make()


@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adamw"])
def test_a_loss_scaled_update_unscales_the_gradients_and_skips_a_step_that_overflowed(optimizer: str) -> None:
    """float16 training's update (torch.amp.GradScaler's scheme): gradients of the loss times a
    power of two, unscaled, give the unscaled step exactly; one infinite or NaN element anywhere
    leaves every param and state as it was, and the last output says the step was skipped."""
    opt, _ = CONFIGS[optimizer]
    types = {k: TensorType(DType.f32, v) for k, v in SHAPES.items()}
    plain, scaled = update_graph(opt, types), update_graph(opt, types, loss_scaled=True)
    assert scaled.scalars == [*plain.scalars, "inv_scale"]
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(v).astype(np.float32) for k, v in SHAPES.items()}
    grads = {k: rng.standard_normal(v).astype(np.float32) for k, v in SHAPES.items()}
    state = {(k, s): rng.random(v).astype(np.float32) for k, v in SHAPES.items() for s in opt.state}
    scalars = [np.float32(v) for v in opt.scalars(1e-2, 3).values()]

    def inputs(g: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [x for k in plain.params for x in (params[k], g[k], *(state[k, s] for s in opt.state))]

    want = interpret(plain.graph, [*inputs(grads), *scalars], {})
    *got, taken = interpret(scaled.graph, [*inputs({k: g * 1024 for k, g in grads.items()}), *scalars,
                                           np.float32(1 / 1024)], {})
    assert taken and len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    for bad in (np.inf, np.nan):
        overflowed = {k: g * 1024 for k, g in grads.items()}
        overflowed["conv.weight"][1, 0, 1] = bad
        *got, taken = interpret(scaled.graph, [*inputs(overflowed), *scalars, np.float32(1 / 1024)], {})
        assert not taken
        for a, b in zip(got, [x for k in plain.params for x in (params[k], *(state[k, s] for s in opt.state))],
                        strict=True):
            np.testing.assert_array_equal(a, b)
