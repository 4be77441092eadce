"""Hand-written PyTorch versions of examples/{mlp,cnn,transformer}.sp.

Plain `nn.Module`s from `torch.nn` layers, state_dict names equal to shipei's (PyTorch layout),
run in eval mode under `torch.inference_mode()`. Attention is `F.scaled_dot_product_attention`
with `is_causal=True` (PyTorch's fused CPU kernel); parameters keep `nn.MultiheadAttention`'s
layout (`in_proj_weight`, `in_proj_bias`, `out_proj`).
"""

from __future__ import annotations

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, hidden: int = 256, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return F.softmax(self.fc2(F.relu(self.fc1(x))), dim=-1)


class BasicBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + x)


class ResNet(nn.Module):
    def __init__(self, width: int = 16, blocks: int = 2, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.layers = nn.ModuleList(BasicBlock(width) for _ in range(blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        y = F.relu(self.bn(self.stem(x)))
        y = F.max_pool2d(y, 2, stride=2)
        for layer in self.layers:
            y = layer(y)
        return self.fc(torch.flatten(self.pool(y), 1))


class CausalSelfAttention(nn.Module):
    """nn.MultiheadAttention's parameters, computed with the fused SDPA kernel."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, C = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int = 512, d_model: int = 128, n_heads: int = 4, n_layers: int = 2,
                 max_len: int = 64):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(max_len, d_model)
        self.h = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens):
        T = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(T, device=tokens.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


MODELS = {"mlp": MLP, "cnn": ResNet, "transformer": GPT}


def build(model: str, weights: str, **_):
    """The model with weights from `weights` (.safetensors), on CPU, in eval mode."""
    net = MODELS[model]()
    net.load_state_dict(safetensors.torch.load_file(weights))
    net.eval()

    @torch.inference_mode()
    def forward(*inputs):
        return net(*inputs)

    return forward


def to_tensor(x):
    return torch.from_numpy(x.copy())


def sync(y):
    return y  # CPU kernels are synchronous


def to_numpy(y):
    return y.numpy()
