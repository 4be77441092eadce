"""Random inputs for a graph that keep every op in its domain, for `--random` and tests."""

from __future__ import annotations

import numpy as np

from .graph import Graph, Value
from .types import Sym, eval_dim


def index_bound(graph: Graph, value: Value) -> int | None:
    """The largest valid index for an integer input used as gather indices, if it is one."""
    bounds = [n.operands[0].shape[n.attrs["axis"]] for n in graph.nodes
              if n.op == "gather" and n.operands[1] is value]
    static = [b for b in bounds if isinstance(b, int)]
    return min(static) if static else None


def random_inputs(graph: Graph, seed: int = 0, dims: dict[str, int] | None = None,
                  default_dim: int = 2) -> list[np.ndarray]:
    """One array per graph input; shape symbols take `dims[name]`, else `default_dim`."""
    rng = np.random.default_rng(seed)
    env = dict(dims or {})
    for v in graph.inputs:
        for d in v.shape:
            if isinstance(d, Sym):
                for s in d.symbols:
                    env.setdefault(s, default_dim)
    out = []
    for v in graph.inputs:
        shape = tuple(eval_dim(d, env) for d in v.shape)
        if v.dtype.is_float:
            array = rng.standard_normal(shape)
        elif v.dtype.is_int:
            array = rng.integers(0, index_bound(graph, v) or 10, shape)
        else:
            array = rng.random(shape) < 0.5
        out.append(array.astype(v.dtype.numpy))
    return out
