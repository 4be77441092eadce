"""Hand-written MindSpore training steps for examples/{digits_mlp,digits_cnn,transformer}.sp.

The baseline that shipei's generated train steps are timed against, written as MindSpore 2.x's
functional training loop: `nn.Cell`s from MindSpore's layers (the GPT is `mindspore_models.GPT`),
a forward function returning the loss, `ms.value_and_grad` over the optimizer's parameters, and
`grad_fn` + optimizer called inside one `@ms.jit` step (one compiled graph per step).

The optimizer is `mindspore.experimental.optim.AdamW` (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
weight decay 0.01 on every parameter): torch.optim.AdamW's maths (decoupled decay, bias
corrections, eps added to sqrt(v) / sqrt(1 - b2^t)), and it runs on CPU, unlike
`mindspore.mint.optim.AdamW` (Ascend only); `nn.AdamWeightDecay` has no bias correction. MindSpore's
CPU layers are NCHW, so the CNN stays NCHW and flattens in PyTorch's order.

    train_step(model, weights_path) -> (step, params)
        step(*inputs)   one optimizer step on framework tensors (x, y) or (tokens, targets);
                        returns the loss as a framework tensor (not synced)
        params()        the current parameters as {shipei's name: numpy array}
    to_tensor(array), to_numpy(tensor), sync(tensor)   as in mindspore_models
"""

from __future__ import annotations

from collections.abc import Callable

import mindspore as ms
import numpy as np
import safetensors.numpy
from mindspore import nn, ops
from mindspore.experimental.optim import AdamW

from .mindspore_models import _RENAMES, GPT, load_torch_names, sync, to_numpy, to_tensor

__all__ = ["train_step", "to_tensor", "to_numpy", "sync"]


class DigitsMLP(nn.Cell):
    def __init__(self, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Dense(64, hidden)
        self.fc2 = nn.Dense(hidden, classes)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class DigitsCNN(nn.Cell):
    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, pad_mode="pad", padding=1, has_bias=True)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, pad_mode="pad", padding=1, has_bias=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.relu = nn.ReLU()
        self.fc = nn.Dense(2 * width * 16, classes)

    def construct(self, x):
        y = self.pool(self.relu(self.conv1(ops.reshape(x, (-1, 1, 8, 8)))))
        return self.fc(ops.flatten(self.relu(self.conv2(y))))


def _classifier_loss(label_smoothing: float) -> Callable:
    def loss(logits, labels):
        return ops.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    return loss


def _lm_loss(logits, targets):
    return ops.cross_entropy(ops.reshape(logits, (-1, logits.shape[-1])), ops.reshape(targets, (-1,)))


MODELS: dict[str, tuple[type[nn.Cell], Callable]] = {
    "mlp": (DigitsMLP, _classifier_loss(0.05)),
    "cnn": (DigitsCNN, _classifier_loss(0.0)),
    "transformer": (GPT, _lm_loss),
}


def torch_named(net: nn.Cell) -> dict[str, np.ndarray]:
    """The inverse of `mindspore_models.load_torch_names`: every parameter by its PyTorch name."""
    out = {}
    for cell_name, cell in net.cells_and_names():
        renames = _RENAMES.get(type(cell), {})
        for attr, param in cell.parameters_and_names(expand=False):
            out[".".join(filter(None, [cell_name, renames.get(attr, attr)]))] = param.asnumpy().copy()
    return out


def train_step(model: str, weights_path: str) -> tuple[Callable[..., ms.Tensor], Callable[[], dict[str, np.ndarray]]]:
    """`grad_fn` and the optimizer in one `ms.jit` graph; parameters and moments update in place."""
    cell, loss_fn = MODELS[model]
    net = cell()
    load_torch_names(net, safetensors.numpy.load_file(weights_path))
    net.set_train(True)
    opt = AdamW(net.trainable_params(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def forward(*inputs):
        return loss_fn(net(*inputs[:-1]), inputs[-1])

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    @ms.jit
    def step(*inputs):
        loss, grads = grad_fn(*inputs)
        opt(grads)
        return loss

    return step, lambda: torch_named(net)
