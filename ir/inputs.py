"""Random inputs for a graph that keep every op in its domain: the one generator behind `--random`,
benchmarks, the op x target suite (`ir.samples.inputs`) and the property tests (`make_inputs`).

Each input is drawn inside the domains of all the ops that read it (`OpDef.domains`): log's
operand positive, div's divisor away from zero, exp's small. Integer inputs that index (gather's
indices) lie in [0, n); other integers in `ints`; bools are fair coins.
"""

from __future__ import annotations

import numpy as np

from .graph import Graph, Value
from .registry import get_op
from .types import Sym, eval_dim

#: The bound of the "small" domain (exp): |x| <= SMALL.
SMALL = 3.0


def index_bound(graph: Graph, value: Value, env: dict[str, int]) -> int | None:
    """The number of valid indices for an integer input used as indices (`OpDef.indices`: gather's,
    cross_entropy's labels), if it is one."""
    bounds = []
    for node in graph.nodes:
        opdef = get_op(node.op)
        for i, spec in opdef.index_operands().items():
            if i < len(node.operands) and node.operands[i] is value:
                bounds.append(eval_dim(node.operands[0].shape[opdef.indexed_axis(node.attrs, spec)], env))
    return min(bounds) if bounds else None


def operand_domains(op: str) -> dict[int, str]:
    """Operand index -> the domain it must be drawn from (`OpDef.domains`)."""
    opdef = get_op(op)
    return {i: opdef.domains[name] for i, name in enumerate(opdef.operands) if name in opdef.domains}


def in_domain(x: np.ndarray, domains: set[str]) -> np.ndarray:
    """`x` moved into every domain in `domains`."""
    if "positive" in domains or {"nonnegative", "nonzero"} <= domains:
        x = np.abs(x) + 0.125
    elif "nonnegative" in domains:
        x = np.abs(x)
    elif "nonzero" in domains:
        x = np.where(x < 0, x - 0.5, x + 0.5)
    # the shifts above can leave [-SMALL, SMALL]; clipping keeps them away from zero
    return np.clip(x, -SMALL, SMALL) if "small" in domains else x


def random_inputs(graph: Graph, seed: int = 0, dims: dict[str, int] | None = None, default_dim: int = 2, *,
                  scale: float | None = None, ties: bool = False, edges: bool = False,
                  ints: tuple[int, int] = (0, 10)) -> list[np.ndarray]:
    """One array per graph input; shape symbols take `dims[name]`, else `default_dim`.

    Floats are standard normal, or uniform in [-scale, scale] where `scale` is given; with `ties`
    half of the inputs are rounded to eighths (so comparisons and maxima meet ties), with `edges`
    an input no domain constrains starts with an exact zero. Integers that do not index are drawn
    from [ints[0], ints[1]).
    """
    rng = np.random.default_rng(seed)
    env = dict.fromkeys((s for v in graph.inputs for d in v.shape if isinstance(d, Sym) for s in d.symbols),
                        default_dim)
    env.update(dims or {})
    domains: dict[Value, set[str]] = {}
    for node in graph.nodes:
        for i, domain in operand_domains(node.op).items():
            if i < len(node.operands):
                domains.setdefault(node.operands[i], set()).add(domain)
    out = []
    for v in graph.inputs:
        shape = tuple(eval_dim(d, env) for d in v.shape)
        if v.dtype.is_float:
            within = domains.get(v, set())
            array = in_domain(rng.standard_normal(shape) if scale is None else rng.uniform(-scale, scale, shape),
                              within)
            if ties and rng.random() < 0.5:
                array = in_domain(np.round(array * 8) / 8, within)
            if edges and not within and array.size > 2:
                array.flat[0] = 0.0
        elif v.dtype.is_int:
            bound = index_bound(graph, v, env)
            array = rng.integers(0, bound, shape) if bound is not None else rng.integers(*ints, shape)
        else:
            array = rng.random(shape) < 0.5
        out.append(np.asarray(array).astype(v.dtype.numpy))
    return out
