"""Hand-written TensorFlow versions of examples/{mlp,cnn,transformer}.sp.

`tf.Module`s holding `tf.Variable`s in Keras layouts (Dense kernels [in, out], conv kernels HWIO,
activations NHWC, which is what TensorFlow's CPU kernels and XLA:CPU run natively), called through
`tf.function(jit_compile=True)` with a serving-style input signature. Weights come from the
PyTorch-named .safetensors file and are transposed once at load; the CNN takes its NCHW input as
declared and transposes it to NHWC inside the compiled function.
"""

from __future__ import annotations

import safetensors.numpy
import tensorflow as tf


class Dense(tf.Module):
    def __init__(self, w, prefix, bias=True):
        super().__init__()
        self.kernel = tf.Variable(w[f"{prefix}.weight"].T)
        self.bias = tf.Variable(w[f"{prefix}.bias"]) if bias else None

    def __call__(self, x):
        # tensordot (a reshape to 2-D and one matmul) as Keras 2's Dense: XLA compiles it as it does an
        # einsum, but the einsum's gradient forms the [..., i, o] outer product before summing it
        y = tf.matmul(x, self.kernel) if x.shape.rank == 2 else tf.tensordot(x, self.kernel, 1)
        return y if self.bias is None else y + self.bias


class LayerNorm(tf.Module):
    def __init__(self, w, prefix, eps=1e-5):
        super().__init__()
        self.gamma = tf.Variable(w[f"{prefix}.weight"])
        self.beta = tf.Variable(w[f"{prefix}.bias"])
        self.eps = eps

    def __call__(self, x):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, self.eps)


class BatchNorm(tf.Module):
    """Inference batch norm on the channel (last) axis with running statistics."""

    def __init__(self, w, prefix, eps=1e-5):
        super().__init__()
        self.gamma = tf.Variable(w[f"{prefix}.weight"])
        self.beta = tf.Variable(w[f"{prefix}.bias"])
        self.mean = tf.Variable(w[f"{prefix}.running_mean"], trainable=False)
        self.var = tf.Variable(w[f"{prefix}.running_var"], trainable=False)
        self.eps = eps

    def __call__(self, x):
        return tf.nn.batch_normalization(x, self.mean, self.var, self.beta, self.gamma, self.eps)


class Conv3x3(tf.Module):
    def __init__(self, w, prefix):
        super().__init__()
        self.kernel = tf.Variable(w[f"{prefix}.weight"].transpose(2, 3, 1, 0))  # OIHW -> HWIO

    def __call__(self, x):
        return tf.nn.conv2d(x, self.kernel, strides=1, padding="SAME")


class MLP(tf.Module):
    def __init__(self, w):
        super().__init__()
        self.fc1, self.fc2 = Dense(w, "fc1"), Dense(w, "fc2")

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, 784], tf.float32)])
    def __call__(self, x):
        return tf.nn.softmax(self.fc2(tf.nn.relu(self.fc1(x))), axis=-1)


class BasicBlock(tf.Module):
    def __init__(self, w, prefix):
        super().__init__()
        self.conv1, self.bn1 = Conv3x3(w, f"{prefix}.conv1"), BatchNorm(w, f"{prefix}.bn1")
        self.conv2, self.bn2 = Conv3x3(w, f"{prefix}.conv2"), BatchNorm(w, f"{prefix}.bn2")

    def __call__(self, x):
        y = tf.nn.relu(self.bn1(self.conv1(x)))
        return tf.nn.relu(self.bn2(self.conv2(y)) + x)


class ResNet(tf.Module):
    def __init__(self, w, blocks=2):
        super().__init__()
        self.stem, self.bn = Conv3x3(w, "stem"), BatchNorm(w, "bn")
        self.layers = [BasicBlock(w, f"layers.{i}") for i in range(blocks)]
        self.fc = Dense(w, "fc")

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, 3, 32, 32], tf.float32)])
    def __call__(self, x):
        y = tf.transpose(x, (0, 2, 3, 1))  # NCHW (the model's input) -> NHWC
        y = tf.nn.relu(self.bn(self.stem(y)))
        y = tf.nn.max_pool2d(y, 2, 2, "VALID")
        for layer in self.layers:
            y = layer(y)
        return self.fc(tf.reduce_mean(y, axis=[1, 2]))


class CausalSelfAttention(tf.Module):
    def __init__(self, w, prefix, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.in_proj = Dense({"x.weight": w[f"{prefix}.in_proj_weight"], "x.bias": w[f"{prefix}.in_proj_bias"]}, "x")
        self.out_proj = Dense(w, f"{prefix}.out_proj")

    def __call__(self, x):
        B, T, C = tf.shape(x)[0], tf.shape(x)[1], x.shape[-1]
        H = C // self.n_heads
        qkv = tf.reshape(self.in_proj(x), (B, T, 3, self.n_heads, H))
        q, k, v = tf.unstack(tf.transpose(qkv, (2, 0, 3, 1, 4)))  # [B, N, T, H] each
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / H ** 0.5)
        causal = tf.linalg.band_part(tf.ones((T, T), tf.bool), -1, 0)
        scores = tf.where(causal, scores, float("-inf"))
        y = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        return self.out_proj(tf.reshape(tf.transpose(y, (0, 2, 1, 3)), (B, T, C)))


class Block(tf.Module):
    def __init__(self, w, prefix, n_heads):
        super().__init__()
        self.ln_1, self.ln_2 = LayerNorm(w, f"{prefix}.ln_1"), LayerNorm(w, f"{prefix}.ln_2")
        self.attn = CausalSelfAttention(w, f"{prefix}.attn", n_heads)
        self.fc, self.proj = Dense(w, f"{prefix}.fc"), Dense(w, f"{prefix}.proj")

    def __call__(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(tf.nn.gelu(self.fc(self.ln_2(x)), approximate=False))


class GPT(tf.Module):
    def __init__(self, w, n_layers=2, n_heads=4):
        super().__init__()
        self.wte = tf.Variable(w["wte.weight"])
        self.wpe = tf.Variable(w["wpe.weight"])
        self.h = [Block(w, f"h.{i}", n_heads) for i in range(n_layers)]
        self.ln_f = LayerNorm(w, "ln_f")
        self.lm_head = Dense(w, "lm_head", bias=False)

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, None], tf.int64)])
    def __call__(self, tokens):
        T = tf.shape(tokens)[1]
        x = tf.gather(self.wte, tokens) + self.wpe[:T]
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


MODELS = {"mlp": MLP, "cnn": ResNet, "transformer": GPT}


def build(model: str, weights: str, **_):
    with tf.device("/CPU:0"):
        return MODELS[model](safetensors.numpy.load_file(weights))


def to_tensor(x):
    with tf.device("/CPU:0"):
        return tf.convert_to_tensor(x)


def sync(y):
    return y.numpy()  # eager results are computed when returned; .numpy() makes sure


def to_numpy(y):
    return y.numpy()
