"""Hand-written JAX training steps for examples/{digits_mlp,digits_cnn,transformer}.sp.

The baseline that shipei's generated train steps are timed against: pure loss functions over a
params pytree in Flax layouts (as in jax_models: Dense kernels [in, out], NHWC convolutions with
HWIO kernels; the GPT is `jax_models.transformer`), and ONE `jax.jit` step that computes
`jax.value_and_grad` of the loss and applies AdamW written out with `jax.tree.map` (optax's
`adamw` maths, which is torch.optim.AdamW's: decoupled decay p *= 1 - lr wd, then Adam with
bias corrections, eps added to sqrt(v) / sqrt(1 - b2^t)). lr 1e-3, betas (0.9, 0.999), eps 1e-8,
weight decay 0.01 on every parameter. Params and optimizer state are donated, so XLA updates them
in place. Like jax_models, it runs with jax's default 32-bit types (int64 labels become int32).

The CNN's input [B, 64] reshapes straight to NHWC [B, 8, 8, 1] (one channel, same bytes as NCHW);
its `fc` kernel rows are permuted once at load from PyTorch's (C, H, W) flatten order to NHWC's
(H, W, C), so the flatten needs no transpose; AdamW is elementwise, so this is exact.

    train_step(model, weights_path) -> (step, params)
        step(*inputs)   one optimizer step on framework tensors (x, y) or (tokens, targets);
                        returns the loss as a framework tensor (not synced)
        params()        the current parameters as {shipei's name: numpy array}
    to_tensor(array), to_numpy(tensor), sync(tensor)   as in jax_models
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from .jax_models import _linear, dense, params_for, sync, to_numpy, to_tensor, transformer

__all__ = ["train_step", "to_tensor", "to_numpy", "sync"]

LR, BETA1, BETA2, EPS, WEIGHT_DECAY = 1e-3, 0.9, 0.999, 1e-8, 0.01


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """torch's F.cross_entropy (mean over the batch, smoothing mixed with the uniform target)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
    return jnp.mean(nll)


def conv3x3(p, x):
    y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def mlp_loss(params, x, y):
    logits = dense(params["fc2"], jax.nn.relu(dense(params["fc1"], x)))
    return cross_entropy(logits, y, label_smoothing=0.05)


def cnn_loss(params, x, y):
    h = jax.nn.relu(conv3x3(params["conv1"], x.reshape(-1, 8, 8, 1)))
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jax.nn.relu(conv3x3(params["conv2"], h))
    return cross_entropy(dense(params["fc"], h.reshape(h.shape[0], -1)), y)


def transformer_loss(params, tokens, targets):
    logits = transformer(params, tokens)
    return cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


LOSSES = {"mlp": mlp_loss, "cnn": cnn_loss, "transformer": transformer_loss}


# --- weights: PyTorch names and layouts <-> the pytrees above -------------------------------------


def _conv(w, prefix):
    return {"kernel": w[f"{prefix}.weight"].transpose(2, 3, 1, 0), "bias": w[f"{prefix}.bias"]}  # OIHW -> HWIO


def _fc_chw_to_hwc(kernel, c: int = 32, hw: int = 16):
    """Rows of a Dense kernel after a (C, H, W) flatten -> after an (H, W, C) flatten."""
    return kernel.reshape(c, hw, -1).transpose(1, 0, 2).reshape(c * hw, -1)


def to_pytree(model: str, w: dict[str, np.ndarray]):
    if model == "mlp":
        return {"fc1": _linear(w, "fc1"), "fc2": _linear(w, "fc2")}
    if model == "cnn":
        fc = _linear(w, "fc")
        return {"conv1": _conv(w, "conv1"), "conv2": _conv(w, "conv2"),
                "fc": {"kernel": _fc_chw_to_hwc(fc["kernel"]), "bias": fc["bias"]}}
    return params_for(model, w)


def to_torch_names(model: str, params) -> dict[str, np.ndarray]:
    """The inverse of `to_pytree`."""
    p = jax.tree.map(np.asarray, params)
    out: dict[str, np.ndarray] = {}

    def linear(prefix, q, bias=True):
        out[f"{prefix}.weight"] = q["kernel"].T
        if bias:
            out[f"{prefix}.bias"] = q["bias"]

    if model == "mlp":
        linear("fc1", p["fc1"])
        linear("fc2", p["fc2"])
    elif model == "cnn":
        for name in ("conv1", "conv2"):
            out[f"{name}.weight"], out[f"{name}.bias"] = p[name]["kernel"].transpose(3, 2, 0, 1), p[name]["bias"]
        hw_c = p["fc"]["kernel"].reshape(16, 32, -1).transpose(1, 0, 2).reshape(512, -1)  # (H, W, C) -> (C, H, W)
        linear("fc", {"kernel": hw_c, "bias": p["fc"]["bias"]})
    else:
        out["wte.weight"], out["wpe.weight"] = p["wte"], p["wpe"]
        for i, block in enumerate(p["h"]):
            for ln in ("ln_1", "ln_2"):
                out[f"h.{i}.{ln}.weight"], out[f"h.{i}.{ln}.bias"] = block[ln]["scale"], block[ln]["bias"]
            out[f"h.{i}.attn.in_proj_weight"] = block["attn"]["in_proj"]["kernel"].T
            out[f"h.{i}.attn.in_proj_bias"] = block["attn"]["in_proj"]["bias"]
            linear(f"h.{i}.attn.out_proj", block["attn"]["out_proj"])
            linear(f"h.{i}.fc", block["fc"])
            linear(f"h.{i}.proj", block["proj"])
        out["ln_f.weight"], out["ln_f.bias"] = p["ln_f"]["scale"], p["ln_f"]["bias"]
        linear("lm_head", p["lm_head"], bias=False)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# --- the step ------------------------------------------------------------------------------------


def adamw(params, grads, state):
    """torch.optim.AdamW's update, one fused elementwise pass per parameter under jit."""
    m, v, t = state
    t = t + 1
    bc1 = 1 - BETA1 ** t.astype(jnp.float32)
    bc2_sqrt = jnp.sqrt(1 - BETA2 ** t.astype(jnp.float32))
    m = jax.tree.map(lambda m, g: m + (1 - BETA1) * (g - m), m, grads)
    v = jax.tree.map(lambda v, g: BETA2 * v + (1 - BETA2) * g * g, v, grads)
    params = jax.tree.map(lambda p, m, v: p * (1 - LR * WEIGHT_DECAY) - (LR / bc1) * m / (jnp.sqrt(v) / bc2_sqrt + EPS),
                          params, m, v)
    return params, (m, v, t)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def _step(loss_fn, params, state, *inputs):
    loss, grads = jax.value_and_grad(loss_fn)(params, *inputs)
    params, state = adamw(params, grads, state)
    return params, state, loss


def train_step(model: str, weights_path: str) -> tuple[Callable[..., jax.Array], Callable[[], dict[str, np.ndarray]]]:
    """The jitted step with params and AdamW state held here (donated and replaced every call)."""
    params = jax.device_put(jax.tree.map(lambda a: np.asarray(a, order="C"),
                                         to_pytree(model, safetensors.numpy.load_file(weights_path))))
    moments = (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params))
    holder = {"params": params, "state": (*moments, jnp.zeros((), jnp.int32))}
    loss_fn = LOSSES[model]

    def step(*inputs: jax.Array) -> jax.Array:
        holder["params"], holder["state"], loss = _step(loss_fn, holder["params"], holder["state"], *inputs)
        return loss

    return step, lambda: to_torch_names(model, holder["params"])
