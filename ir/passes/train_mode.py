"""train-mode: a loss graph as training computes it.

Batch norm over running statistics (buffers) becomes `batch_norm_train`: it normalizes by the
batch's statistics, and its blended running statistics become extra outputs of the graph, which
the trainer writes back into the buffers after each step (torch's BatchNorm in train mode).

Dropout becomes a product with a mask, an extra input of the graph: 0 where an element is
dropped, 1 / (1 - p) where it is kept (torch's scaling). The trainer draws the masks from a
generator seeded by its seed and the step, in numpy, so that every target drops the same
elements and the four take the same steps; a resumed run draws the masks it would have drawn.

For float16 training, `scale_loss` multiplies the loss by a scalar input, `loss_scale`, so that
small gradients survive float16 (torch.amp.GradScaler's scheme; the update unscales them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import Builder, Graph, Node, Value
from ..types import DType, TensorType, concrete_shape
from .rewrite import Rewriter, rewrite


@dataclass
class TrainMode:
    """What `to_training` added to a graph: the buffers its extra outputs update and the dropout
    masks its extra inputs take (each mask input and its drop probability), in order."""

    updates: list[str] = field(default_factory=list)
    masks: list[tuple[Value, float]] = field(default_factory=list)

    def draw_masks(self, dims: dict[str, int], seed: int, step: int) -> list[np.ndarray]:
        """The masks of step `step` at the shape symbols `dims`: the same for a seed and step."""
        rng = np.random.default_rng([seed, step])
        return [np.where(rng.random(concrete_shape(mask.shape, dims)) >= p, 1 / (1 - p) if p < 1 else 0.0, 0.0)
                .astype(mask.dtype.numpy) for mask, p in self.masks]


def to_training(graph: Graph) -> TrainMode:
    """Rewrite `graph` in place; what it added (see `TrainMode`)."""
    mode = TrainMode()
    new_outputs: list[Value] = []
    taken = {v.name for v in (*graph.inputs, *graph.params)}

    def rule(rw: Rewriter, node: Node) -> list[Value] | None:
        if node.op == "dropout":
            return [_dropout(rw, node, mode, taken)]
        if node.op != "batch_norm":
            return None
        x, mean, var, weight, bias = node.operands
        if not (mean.param and mean.param.buffer and var.param and var.param.buffer):
            return None
        y, new_mean, new_var = rw.emit_op("batch_norm_train", x, mean, var, weight, bias, eps=node.attrs["eps"])
        mode.updates += [mean.name, var.name]
        new_outputs.extend([new_mean, new_var])
        return [y]

    rewrite(graph, rule)
    graph.inputs += [mask for mask, _ in mode.masks]
    graph.outputs += new_outputs
    return mode


def _dropout(rw: Rewriter, node: Node, mode: TrainMode, taken: set[str]) -> Value:
    (x,) = node.operands
    p = float(node.attrs["p"])
    if p == 0:
        return x
    i = len(mode.masks)
    while f"dropout_mask{i}" in taken:  # an input of the model's own may have the name
        i += 1
    name = f"dropout_mask{i}"
    taken.add(name)
    mask = Value(x.type, name)
    mode.masks.append((mask, p))
    return rw.emit("mul", x, mask)


def scale_loss(graph: Graph) -> None:
    """Make the loss (the first output) the loss times a new f32 scalar input, `loss_scale`."""
    b = Builder(graph)
    scale = b.input("loss_scale", TensorType(DType.f32, ()))
    loss = graph.outputs[0]
    graph.outputs[0] = b("mul", loss, scale if loss.dtype is DType.f32 else b("cast", scale, dtype=loss.dtype))
