"""Deterministic parameter initialization: the same seed gives every target the same weights.

Each param draws from its own generator seeded by (seed, crc32(name)), so adding or reordering
params never changes the values of the others.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from .errors import ShipeiError
from .graph import Graph, Init, Value

Initializer = Callable[..., np.ndarray]


def _uniform(rng: np.random.Generator, shape, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return rng.uniform(low, high, shape)


def _kaiming_uniform(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    # PyTorch's default for Linear and Conv2d weights (kaiming_uniform with a=sqrt(5)).
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape)


def _xavier_uniform(rng: np.random.Generator, shape, fan_in: int, fan_out: int) -> np.ndarray:
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": lambda rng, shape: np.zeros(shape),
    "ones": lambda rng, shape: np.ones(shape),
    "full": lambda rng, shape, value: np.full(shape, value),
    "normal": lambda rng, shape, mean=0.0, std=1.0: rng.normal(mean, std, shape),
    "uniform": _uniform,
    "kaiming_uniform": _kaiming_uniform,
    "xavier_uniform": _xavier_uniform,
}


def check_init(init: Init) -> None:
    """Reject unknown initializers and arguments at compile time, not when weights are made."""
    fn = INITIALIZERS.get(init.name)
    if fn is None:
        raise ShipeiError(f"unknown initializer '{init.name}'", hint=f"initializers are {', '.join(INITIALIZERS)}")
    names = fn.__code__.co_varnames[2:fn.__code__.co_argcount]
    for key, _ in init.args:
        if key not in names:
            raise ShipeiError(f"initializer '{init.name}' has no argument '{key}'",
                              hint=f"it takes {', '.join(names) or 'no arguments'}")


def init_param(param: Value, seed: int = 0) -> np.ndarray:
    if not param.type.is_static:
        raise ShipeiError(f"param {param.name} has a symbolic shape {param.type}")
    rng = np.random.default_rng([seed, zlib.crc32(param.name.encode())])
    info = param.param
    values = INITIALIZERS[info.init.name](rng, param.shape, **dict(info.init.args))
    return np.asarray(values).astype(param.dtype.numpy)


def init_params(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights for every param and buffer of `graph`, by name."""
    return {p.name: init_param(p, seed) for p in graph.params}
