"""Hand-written PyTorch training steps for examples/{digits_mlp,digits_cnn,transformer}.sp.

The baseline that shipei's generated train steps are timed against: plain `nn.Module`s (the GPT is
`torch_models.GPT`, fused SDPA attention), `F.cross_entropy`, and `torch.optim.AdamW` (lr 1e-3,
betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on every parameter, the default foreach
implementation), stepped eagerly the way a PyTorch user trains:
`opt.zero_grad(set_to_none=True); loss = ...; loss.backward(); opt.step()`.

    train_step(model, weights_path) -> (step, params)
        step(*inputs)   one optimizer step on framework tensors (x, y) or (tokens, targets);
                        returns the loss as a framework tensor (not synced)
        params()        the current parameters as {shipei's name: numpy array}
    to_tensor(array), to_numpy(tensor), sync(tensor)   as in torch_models
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from .torch_models import GPT, sync, to_numpy, to_tensor

__all__ = ["train_step", "to_tensor", "to_numpy", "sync"]


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.fc2(F.relu(self.fc1(x))), y, label_smoothing=0.05)


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 16, classes)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x.view(-1, 1, 8, 8))), 2, stride=2)
        return F.cross_entropy(self.fc(torch.flatten(F.relu(self.conv2(h)), 1)), y)


class GPTLoss(GPT):
    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(tokens)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


MODELS: dict[str, type[nn.Module]] = {"mlp": DigitsMLP, "cnn": DigitsCNN, "transformer": GPTLoss}


Step = Callable[..., torch.Tensor]


def train_step(model: str, weights_path: str) -> tuple[Step, Callable[[], dict[str, np.ndarray]]]:
    """One eager AdamW step per call on the model loaded from `weights_path` (shipei's names)."""
    net = MODELS[model]()
    net.load_state_dict(safetensors.torch.load_file(weights_path))
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def step(*inputs: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = net.loss(*inputs)
        loss.backward()
        opt.step()
        return loss.detach()

    def params() -> dict[str, np.ndarray]:
        return {name: p.detach().numpy().copy() for name, p in net.named_parameters()}

    return step, params
