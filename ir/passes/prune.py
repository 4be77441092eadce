"""prune: magnitude pruning of layer weights, unstructured or structured, by a sparsity knob.

For each layer weight (`layer_weights`: matmul and conv weights) with at least
`ctx.settings.prune_min_elements` elements (default 1024), a fraction `ctx.settings.sparsity`
(default 0.5) is set to zero:

- unstructured (the default): the individual weights of least magnitude;
- structured (`ctx.settings.structured`): whole output channels of least L2 norm, so a target
  or a later pass can drop them (a conv filter, a Linear row).

The graph keeps its shape; the weights change in place (frozen weights only). Per weight,
`ctx.results.prune_report` records the zeros and the stored size of a sparse encoding: a bitmap
of nonzeros plus their values (unstructured), or the kept channels plus a channel bitmap
(structured), against the dense size; `summary` says it in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ShipeiError
from ..graph import Graph
from .manager import PassContext, WeightPass
from .rewrite import layer_weights


@dataclass(frozen=True)
class Pruned:
    zeros: int
    total: int
    dense_bytes: int
    sparse_bytes: int


def summary(report: Mapping[str, Pruned]) -> str:
    zeros = sum(r.zeros for r in report.values())
    total = sum(r.total for r in report.values())
    dense = sum(r.dense_bytes for r in report.values())
    sparse = sum(r.sparse_bytes for r in report.values())
    return (f"prune: {len(report)} weight(s), {zeros:,} of {total:,} values zero ({zeros / max(total, 1):.0%}); "
            f"stored sparse {dense / 1024:,.1f} KiB -> {sparse / 1024:,.1f} KiB")


def prune_array(w: np.ndarray, sparsity: float, axis: int | None) -> np.ndarray:
    """`w` with its `sparsity` fraction of least-magnitude weights (or, with a channel `axis`,
    channels of least L2 norm) set to zero."""
    if axis is None:
        k = int(round(sparsity * w.size))
        if k == 0:
            return w.copy()
        order = np.argsort(np.abs(w), axis=None, kind="stable")
        out = w.copy().reshape(-1)
        out[order[:k]] = 0
        return out.reshape(w.shape)
    moved = np.moveaxis(w, axis, 0)
    norms = np.sqrt(np.sum(moved.reshape(moved.shape[0], -1).astype(np.float64) ** 2, axis=1))
    drop = np.argsort(norms, kind="stable")[: int(round(sparsity * len(norms)))]
    out = moved.copy()
    out[drop] = 0
    return np.moveaxis(out, 0, axis)


def sparse_bytes(w: np.ndarray, axis: int | None) -> int:
    if axis is None:
        return int(np.count_nonzero(w)) * w.itemsize + -(-w.size // 8)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    kept = int(np.count_nonzero(np.any(moved != 0, axis=1)))
    return kept * moved.shape[1] * w.itemsize + -(-w.shape[axis] // 8)


class Prune(WeightPass):
    name = "prune"

    def rewrite(self, graph: Graph, ctx: PassContext, weights: dict[str, np.ndarray]) -> Graph:
        sparsity = ctx.settings.sparsity
        if not 0.0 <= sparsity <= 1.0:
            raise ShipeiError(f"sparsity must be between 0 and 1, got {sparsity}")
        structured = ctx.settings.structured
        limit = ctx.settings.prune_min_elements
        report = ctx.results.prune_report
        for p, axis in layer_weights(graph).items():
            w = np.asarray(weights[p.name])
            if w.size < limit:
                continue
            channel = axis if structured else None
            pruned = prune_array(w, sparsity, channel)
            weights[p.name] = pruned
            report[p.name] = Pruned(int(w.size - np.count_nonzero(pruned)), int(w.size), int(w.nbytes),
                                    sparse_bytes(pruned, channel))
        return graph
