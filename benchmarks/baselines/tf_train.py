"""Hand-written TensorFlow training steps for examples/{digits_mlp,digits_cnn,transformer}.sp.

The baseline that shipei's generated train steps are timed against: `tf.Module`s holding
`tf.Variable`s in Keras layouts (as in tf_models: Dense kernels [in, out], NHWC convolutions with
HWIO kernels; the GPT is `tf_models.GPT`), and ONE `tf.function(jit_compile=True)` step that
records the loss on a `tf.GradientTape` and applies the optimizer update in the same XLA cluster.

The optimizer is torch.optim.AdamW's update written on the tf.Variables (lr 1e-3, betas (0.9,
0.999), eps 1e-8, weight decay 0.01), inside the same compiled step. `keras.optimizers.AdamW`
divides by sqrt(v) + eps where torch divides by sqrt(v) / sqrt(1 - b2^t) + eps, so it would not
take the same steps as the other side, and the parameters could not be checked against each other.

The CNN's input [B, 64] reshapes straight to NHWC [B, 8, 8, 1] (one channel, same bytes as NCHW);
its `fc` kernel rows are permuted once at load from PyTorch's (C, H, W) flatten order to NHWC's
(H, W, C), so the flatten needs no transpose; AdamW is elementwise, so this is exact.

    train_step(model, weights_path) -> (step, params)
        step(*inputs)   one optimizer step on framework tensors (x, y) or (tokens, targets);
                        returns the loss as a framework tensor (not synced)
        params()        the current parameters as {shipei's name: numpy array}
    to_tensor(array), to_numpy(tensor), sync(tensor)   as in tf_models
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import safetensors.numpy
import tensorflow as tf

from .tf_models import GPT, Dense, LayerNorm, sync, to_numpy, to_tensor

__all__ = ["train_step", "to_tensor", "to_numpy", "sync"]


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """torch's F.cross_entropy: mean over the batch, smoothing mixed with the uniform target."""
    if not label_smoothing:
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    classes = logits.shape[-1]
    target = tf.one_hot(labels, classes) * (1 - label_smoothing) + label_smoothing / classes
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(target, logits))


class Conv3x3(tf.Module):
    def __init__(self, w: dict[str, np.ndarray], prefix: str):
        super().__init__()
        self.kernel = tf.Variable(w[f"{prefix}.weight"].transpose(2, 3, 1, 0))  # OIHW -> HWIO
        self.bias = tf.Variable(w[f"{prefix}.bias"])

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.bias_add(tf.nn.conv2d(x, self.kernel, strides=1, padding="SAME"), self.bias)


class DigitsMLP(tf.Module):
    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__()
        self.fc1, self.fc2 = Dense(w, "fc1"), Dense(w, "fc2")

    def loss(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return cross_entropy(self.fc2(tf.nn.relu(self.fc1(x))), y, label_smoothing=0.05)

    def torch_named(self) -> dict[str, np.ndarray]:
        return {**_dense("fc1", self.fc1), **_dense("fc2", self.fc2)}


class DigitsCNN(tf.Module):
    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__()
        self.conv1, self.conv2 = Conv3x3(w, "conv1"), Conv3x3(w, "conv2")
        chw = w["fc.weight"]  # [10, C*H*W]: columns in PyTorch's NCHW flatten order -> NHWC's
        self.fc = Dense({"fc.weight": chw.reshape(-1, 32, 16).transpose(0, 2, 1).reshape(chw.shape),
                         "fc.bias": w["fc.bias"]}, "fc")

    def loss(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        h = tf.nn.relu(self.conv1(tf.reshape(x, (-1, 8, 8, 1))))
        h = tf.nn.relu(self.conv2(tf.nn.max_pool2d(h, 2, 2, "VALID")))
        return cross_entropy(self.fc(tf.reshape(h, (-1, 512))), y)

    def torch_named(self) -> dict[str, np.ndarray]:
        out = {f"{name}.{k}": v for name in ("conv1", "conv2") for k, v in _conv(getattr(self, name)).items()}
        fc = _dense("fc", self.fc)
        hwc = fc["fc.weight"]
        chw = hwc.reshape(-1, 16, 32).transpose(0, 2, 1).reshape(hwc.shape)  # NHWC flatten order to NCHW
        return {**out, "fc.weight": chw, "fc.bias": fc["fc.bias"]}


class GPTLoss(GPT):
    def loss(self, tokens: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        # GPT's own __call__ is a compiled serving function; differentiated from inside the compiled
        # step, XLA would recompile it on every call, so the step traces its Python body instead
        logits = GPT.__call__.python_function(self, tokens)
        return cross_entropy(tf.reshape(logits, (-1, logits.shape[-1])), tf.reshape(targets, (-1,)))

    def torch_named(self) -> dict[str, np.ndarray]:
        out = {"wte.weight": self.wte.numpy(), "wpe.weight": self.wpe.numpy(), **_ln("ln_f", self.ln_f),
               "lm_head.weight": self.lm_head.kernel.numpy().T}
        for i, b in enumerate(self.h):
            out.update({**_ln(f"h.{i}.ln_1", b.ln_1), **_ln(f"h.{i}.ln_2", b.ln_2),
                        f"h.{i}.attn.in_proj_weight": b.attn.in_proj.kernel.numpy().T,
                        f"h.{i}.attn.in_proj_bias": b.attn.in_proj.bias.numpy(),
                        **_dense(f"h.{i}.attn.out_proj", b.attn.out_proj),
                        **_dense(f"h.{i}.fc", b.fc), **_dense(f"h.{i}.proj", b.proj)})
        return out


def _dense(prefix: str, d: Dense) -> dict[str, np.ndarray]:
    return {f"{prefix}.weight": d.kernel.numpy().T, f"{prefix}.bias": d.bias.numpy()}


def _conv(c: Conv3x3) -> dict[str, np.ndarray]:
    return {"weight": c.kernel.numpy().transpose(3, 2, 0, 1), "bias": c.bias.numpy()}


def _ln(prefix: str, ln: LayerNorm) -> dict[str, np.ndarray]:
    return {f"{prefix}.weight": ln.gamma.numpy(), f"{prefix}.bias": ln.beta.numpy()}


MODELS = {"mlp": DigitsMLP, "cnn": DigitsCNN, "transformer": GPTLoss}


class AdamW(tf.Module):
    """torch.optim.AdamW's update on tf.Variables: p *= 1 - lr wd, then Adam with bias corrections."""

    def __init__(self, variables: list[tf.Variable], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__()
        self.variables_ = variables
        self.m = [tf.Variable(tf.zeros_like(p)) for p in variables]
        self.v = [tf.Variable(tf.zeros_like(p)) for p in variables]
        self.t = tf.Variable(0.0)
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay

    def apply(self, grads: list[tf.Tensor]) -> None:
        t = self.t.assign_add(1.0)
        step_size = self.lr / (1 - self.b1 ** t)
        bc2_sqrt = tf.sqrt(1 - self.b2 ** t)
        for p, g, m, v in zip(self.variables_, grads, self.m, self.v):
            g = tf.convert_to_tensor(g)  # the embeddings' IndexedSlices -> dense, as torch's dense grads
            m_t = m.assign(m + (1 - self.b1) * (g - m))
            v_t = v.assign(self.b2 * v + (1 - self.b2) * tf.square(g))
            p.assign(p * (1 - self.lr * self.wd) - step_size * m_t / (tf.sqrt(v_t) / bc2_sqrt + self.eps))


def train_step(model: str, weights_path: str) -> tuple[Callable[..., tf.Tensor], Callable[[], dict[str, np.ndarray]]]:
    """The compiled step closing over the module's variables and the optimizer's."""
    with tf.device("/CPU:0"):
        net = MODELS[model](safetensors.numpy.load_file(weights_path))
        variables = list(net.trainable_variables)
        apply = AdamW(variables).apply

    @tf.function(jit_compile=True)
    def step(*inputs: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = net.loss(*inputs)
        apply(tape.gradient(loss, variables))
        return loss

    def params() -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v) for k, v in net.torch_named().items()}

    return step, params
