"""Hand-written JAX versions of examples/{mlp,cnn,transformer}.sp.

Pure functions over a params pytree, compiled with `jax.jit`, in the layouts Flax uses: Dense
kernels [in, out] and convolutions NHWC with HWIO kernels (XLA:CPU's native conv layout). Weights
are read from the PyTorch-named .safetensors file and transposed once at load; the CNN takes its
NCHW input as declared and transposes it to NHWC inside the jitted function. Attention is
`jax.nn.dot_product_attention(..., is_causal=True)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy


def dense(p, x):
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y


def layer_norm(p, x, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def batch_norm(p, x, eps=1e-5):
    """Inference batch norm over the last (channel) axis, with running statistics, as flax does."""
    scale = p["scale"] * jax.lax.rsqrt(p["var"] + eps)
    return x * scale + (p["bias"] - p["mean"] * scale)


def conv3x3(w, x):
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


# --- models --------------------------------------------------------------------------------------


@jax.jit
def mlp(params, x):
    h = jax.nn.relu(dense(params["fc1"], x))
    return jax.nn.softmax(dense(params["fc2"], h), axis=-1)


@jax.jit
def cnn(params, x):
    y = jnp.transpose(x, (0, 2, 3, 1))  # NCHW (the model's input) -> NHWC
    y = jax.nn.relu(batch_norm(params["bn"], conv3x3(params["stem"], y)))
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    for block in params["layers"]:
        z = jax.nn.relu(batch_norm(block["bn1"], conv3x3(block["conv1"], y)))
        z = batch_norm(block["bn2"], conv3x3(block["conv2"], z))
        y = jax.nn.relu(z + y)
    return dense(params["fc"], jnp.mean(y, axis=(1, 2)))


@functools.partial(jax.jit, static_argnames="n_heads")
def transformer(params, tokens, n_heads=4):
    B, T = tokens.shape
    x = params["wte"][tokens] + params["wpe"][:T]
    for block in params["h"]:
        C = x.shape[-1]
        qkv = dense(block["attn"]["in_proj"], layer_norm(block["ln_1"], x))
        q, k, v = jnp.split(qkv.reshape(B, T, 3 * n_heads, C // n_heads), 3, axis=2)  # [B, T, N, H] each
        y = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        x = x + dense(block["attn"]["out_proj"], y.reshape(B, T, C))
        x = x + dense(block["proj"], jax.nn.gelu(dense(block["fc"], layer_norm(block["ln_2"], x)), approximate=False))
    return dense(params["lm_head"], layer_norm(params["ln_f"], x))


# --- weights: PyTorch names and layouts -> the pytrees above -----------------------------------


def _linear(w, prefix, bias=True):
    p = {"kernel": w[f"{prefix}.weight"].T}
    if bias:
        p["bias"] = w[f"{prefix}.bias"]
    return p


def _bn(w, prefix):
    return {"scale": w[f"{prefix}.weight"], "bias": w[f"{prefix}.bias"],
            "mean": w[f"{prefix}.running_mean"], "var": w[f"{prefix}.running_var"]}


def _ln(w, prefix):
    return {"scale": w[f"{prefix}.weight"], "bias": w[f"{prefix}.bias"]}


def _oihw_to_hwio(a):
    return a.transpose(2, 3, 1, 0)


def _count(w, prefix):
    return len({k.split(".")[1] for k in w if k.startswith(prefix + ".")})


def params_for(model: str, w: dict[str, np.ndarray]):
    if model == "mlp":
        return {"fc1": _linear(w, "fc1"), "fc2": _linear(w, "fc2")}
    if model == "cnn":
        return {"stem": _oihw_to_hwio(w["stem.weight"]), "bn": _bn(w, "bn"),
                "layers": [{"conv1": _oihw_to_hwio(w[f"layers.{i}.conv1.weight"]), "bn1": _bn(w, f"layers.{i}.bn1"),
                            "conv2": _oihw_to_hwio(w[f"layers.{i}.conv2.weight"]), "bn2": _bn(w, f"layers.{i}.bn2")}
                           for i in range(_count(w, "layers"))],
                "fc": _linear(w, "fc")}
    if model == "transformer":
        return {"wte": w["wte.weight"], "wpe": w["wpe.weight"],
                "h": [{"ln_1": _ln(w, f"h.{i}.ln_1"), "ln_2": _ln(w, f"h.{i}.ln_2"),
                       "attn": {"in_proj": {"kernel": w[f"h.{i}.attn.in_proj_weight"].T,
                                            "bias": w[f"h.{i}.attn.in_proj_bias"]},
                                "out_proj": _linear(w, f"h.{i}.attn.out_proj")},
                       "fc": _linear(w, f"h.{i}.fc"), "proj": _linear(w, f"h.{i}.proj")}
                      for i in range(_count(w, "h"))],
                "ln_f": _ln(w, "ln_f"), "lm_head": _linear(w, "lm_head", bias=False)}
    raise KeyError(model)


FORWARD = {"mlp": mlp, "cnn": cnn, "transformer": transformer}


def build(model: str, weights: str, **_):
    """The jitted forward with its params bound, params on the CPU device."""
    params = jax.device_put(jax.tree.map(lambda a: np.asarray(a, order="C"),
                                         params_for(model, safetensors.numpy.load_file(weights))))
    fn = FORWARD[model]
    return lambda *inputs: fn(params, *inputs)


def to_tensor(x):
    return jax.device_put(x)  # int64 tokens become int32 (jax's default), as a JAX user has them


def sync(y):
    return jax.block_until_ready(y)


def to_numpy(y):
    return np.asarray(y)
