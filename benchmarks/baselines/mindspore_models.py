"""Hand-written MindSpore versions of examples/{mlp,cnn,transformer}.sp.

`nn.Cell`s built from MindSpore's own layers (nn.Dense, nn.Conv2d, nn.BatchNorm2d, nn.LayerNorm,
nn.Embedding, nn.MaxPool2d, nn.GELU), inference mode (`set_train(False)`), the top-level
`construct` compiled as one graph with `ms.jit`. Weights come from the PyTorch-named .safetensors
file; MindSpore's own parameter names (gamma/beta, moving_mean/moving_variance, embedding_table)
are mapped at load. MindSpore's CPU layers are NCHW, so the CNN stays NCHW.
"""

from __future__ import annotations

import sys
import types

import mindspore as ms
import numpy as np
import safetensors.numpy
from mindspore import nn, ops


class MLP(nn.Cell):
    def __init__(self, hidden=256, classes=10):
        super().__init__()
        self.fc1 = nn.Dense(784, hidden)
        self.fc2 = nn.Dense(hidden, classes)
        self.relu = nn.ReLU()
        self.softmax = nn.Softmax(axis=-1)

    @ms.jit
    def construct(self, x):
        return self.softmax(self.fc2(self.relu(self.fc1(x))))


def conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, pad_mode="pad", padding=1, has_bias=False)


class BasicBlock(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(channels, channels), nn.BatchNorm2d(channels, eps=1e-5)
        self.conv2, self.bn2 = conv3x3(channels, channels), nn.BatchNorm2d(channels, eps=1e-5)
        self.relu = nn.ReLU()

    def construct(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + x)


class ResNet(nn.Cell):
    def __init__(self, width=16, blocks=2, classes=10):
        super().__init__()
        self.stem, self.bn = conv3x3(3, width), nn.BatchNorm2d(width, eps=1e-5)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layers = nn.SequentialCell([BasicBlock(width) for _ in range(blocks)])
        self.fc = nn.Dense(width, classes)

    @ms.jit
    def construct(self, x):
        y = self.pool(self.relu(self.bn(self.stem(x))))
        y = self.layers(y)
        return self.fc(ops.mean(y, (2, 3)))


class CausalSelfAttention(nn.Cell):
    """nn.MultiheadAttention's parameter layout: in_proj_weight [3E, E], in_proj_bias, out_proj."""

    def __init__(self, d_model, n_heads, max_len):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.scale = 1.0 / self.head_dim ** 0.5
        self.in_proj_weight = ms.Parameter(ms.Tensor(np.zeros((3 * d_model, d_model), np.float32)),
                                           name="in_proj_weight")
        self.in_proj_bias = ms.Parameter(ms.Tensor(np.zeros((3 * d_model,), np.float32)), name="in_proj_bias")
        self.out_proj = nn.Dense(d_model, d_model)
        self.mask = ms.Tensor(np.triu(np.full((max_len, max_len), -np.inf, np.float32), 1))  # additive causal mask

    def construct(self, x):
        B, T, C = x.shape
        q, k, v = ops.split(ops.dense(x, self.in_proj_weight, self.in_proj_bias), C, -1)
        q = ops.transpose(ops.reshape(q, (B, T, self.n_heads, self.head_dim)), (0, 2, 1, 3))
        k = ops.transpose(ops.reshape(k, (B, T, self.n_heads, self.head_dim)), (0, 2, 3, 1))  # K^T
        v = ops.transpose(ops.reshape(v, (B, T, self.n_heads, self.head_dim)), (0, 2, 1, 3))
        scores = ops.matmul(q, k) * self.scale + self.mask[:T, :T]
        y = ops.matmul(ops.softmax(scores, axis=-1), v)
        return self.out_proj(ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (B, T, C)))


class Block(nn.Cell):
    def __init__(self, d_model, n_heads, max_len):
        super().__init__()
        self.ln_1 = nn.LayerNorm((d_model,), epsilon=1e-5)
        self.attn = CausalSelfAttention(d_model, n_heads, max_len)
        self.ln_2 = nn.LayerNorm((d_model,), epsilon=1e-5)
        self.fc = nn.Dense(d_model, 4 * d_model)
        self.gelu = nn.GELU(approximate=False)
        self.proj = nn.Dense(4 * d_model, d_model)

    def construct(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(self.gelu(self.fc(self.ln_2(x))))


class GPT(nn.Cell):
    def __init__(self, vocab=512, d_model=128, n_heads=4, n_layers=2, max_len=64):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(max_len, d_model)
        self.h = nn.SequentialCell([Block(d_model, n_heads, max_len) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm((d_model,), epsilon=1e-5)
        self.lm_head = nn.Dense(d_model, vocab, has_bias=False)

    @ms.jit
    def construct(self, tokens):
        T = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(ops.arange(T))
        return self.lm_head(self.ln_f(self.h(x)))


MODELS = {"mlp": MLP, "cnn": ResNet, "transformer": GPT}

#: MindSpore's parameter names -> PyTorch's, per layer type.
_RENAMES = {
    nn.BatchNorm2d: {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                     "moving_variance": "running_var"},
    nn.LayerNorm: {"gamma": "weight", "beta": "bias"},
    nn.Embedding: {"embedding_table": "weight"},
}


def load_torch_names(net: nn.Cell, arrays: dict[str, np.ndarray]) -> None:
    """Assign every parameter of `net` from the PyTorch-named arrays; all names must be used."""
    used = set()
    for cell_name, cell in net.cells_and_names():
        renames = _RENAMES.get(type(cell), {})
        for attr, param in cell.parameters_and_names(expand=False):
            torch_name = ".".join(filter(None, [cell_name, renames.get(attr, attr)]))
            param.set_data(ms.Tensor(np.asarray(arrays[torch_name], order="C")))
            used.add(torch_name)
    unused = {k for k in arrays if not k.endswith("num_batches_tracked")} - used
    if unused:
        raise ValueError(f"weights not used by the MindSpore model: {sorted(unused)}")


def build(model: str, weights: str, **_):
    net = MODELS[model]()
    load_torch_names(net, safetensors.numpy.load_file(weights))
    return net.set_train(False)


def to_tensor(x):
    return ms.Tensor(np.asarray(x, order="C"))


def sync(y):
    return y.asnumpy()


def to_numpy(y):
    return y.asnumpy()


# ms.jit compiles `construct` by importing its module by name; make this module importable by the
# name it was loaded under even when it was loaded from a file path.
if __name__ not in sys.modules:
    sys.modules[__name__] = types.ModuleType(__name__)
    vars(sys.modules[__name__]).update(globals())
