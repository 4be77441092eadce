# The layer prelude: every model sees these layers. Parameter names and layouts follow PyTorch's
# (Linear.weight is [out, in]; Conv2d.weight is [out, in/groups, kh, kw]), so a torch.nn
# state_dict loads into the equivalent shipei model by name.
#
# In a static `if`, a declared param or sub-layer counts as true: `if bias { ... }` reads as
# PyTorch's `if self.bias is not None`.

layer Linear(in_features: int, out_features: int, bias: bool = true) {
    param weight: f32[out_features, in_features] = kaiming_uniform(fan_in=in_features)
    if bias {
        param bias: f32[out_features] = uniform(low=-1.0 / in_features ** 0.5, high=1.0 / in_features ** 0.5)
    }

    forward(x: f32[..., in_features]) -> f32[..., out_features] {
        y = x @ weight.T
        if bias { y = y + bias }
        return y
    }
}

layer Conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
             dilation: int = 1, groups: int = 1, bias: bool = true) {
    fan_in = in_channels // groups * kernel_size * kernel_size
    param weight: f32[out_channels, in_channels // groups, kernel_size, kernel_size] = kaiming_uniform(fan_in=fan_in)
    if bias {
        param bias: f32[out_channels] = uniform(low=-1.0 / fan_in ** 0.5, high=1.0 / fan_in ** 0.5)
    }

    forward(x: f32[N, in_channels, H, W]) -> f32[N, out_channels, OH, OW] {
        y = conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
        if bias { y = y + reshape(bias, [out_channels, 1, 1]) }
        return y
    }
}

layer BatchNorm2d(num_features: int, eps: float = 1e-5) {
    param weight: f32[num_features] = ones()
    param bias: f32[num_features] = zeros()
    buffer running_mean: f32[num_features] = zeros()
    buffer running_var: f32[num_features] = ones()
    buffer num_batches_tracked: i64[] = zeros()

    forward(x: f32[N, num_features, H, W]) -> f32[N, num_features, H, W] {
        return batch_norm(x, running_mean, running_var, weight, bias, eps=eps)
    }
}

layer LayerNorm(normalized_shape: int, eps: float = 1e-5) {
    param weight: f32[normalized_shape] = ones()
    param bias: f32[normalized_shape] = zeros()

    forward(x: f32[..., normalized_shape]) -> f32[..., normalized_shape] {
        return layer_norm(x, weight, bias, eps=eps)
    }
}

layer Embedding(num_embeddings: int, embedding_dim: int) {
    param weight: f32[num_embeddings, embedding_dim] = normal(mean=0.0, std=1.0)

    forward(indices: i64[...]) -> f32[..., embedding_dim] {
        return gather(weight, indices, axis=0)
    }
}

# Self-attention with torch.nn.MultiheadAttention's parameters (batch_first=True).
layer MultiHeadAttention(embed_dim: int, num_heads: int, causal: bool = false) {
    param in_proj_weight: f32[3 * embed_dim, embed_dim] = xavier_uniform(fan_in=embed_dim, fan_out=3 * embed_dim)
    param in_proj_bias: f32[3 * embed_dim] = zeros()
    out_proj = Linear(embed_dim, embed_dim)

    forward(x: f32[B, T, embed_dim]) -> f32[B, T, embed_dim] {
        require(embed_dim % num_heads == 0, "embed_dim must be divisible by num_heads")
        head_dim = embed_dim // num_heads
        q, k, v = split(x @ in_proj_weight.T + in_proj_bias, 3, axis=-1)
        q = transpose(reshape(q, [B, T, num_heads, head_dim]), [0, 2, 1, 3])
        k = transpose(reshape(k, [B, T, num_heads, head_dim]), [0, 2, 3, 1])
        v = transpose(reshape(v, [B, T, num_heads, head_dim]), [0, 2, 1, 3])
        scores = q @ k * (1.0 / head_dim ** 0.5)
        if causal {
            pos = arange(T)
            future = reshape(pos, [T, 1]) < reshape(pos, [1, T])
            scores = where(future, -inf, scores)
        }
        out = transpose(softmax(scores, axis=-1) @ v, [0, 2, 1, 3])
        return out_proj(reshape(out, [B, T, embed_dim]))
    }
}

layer Dropout(p: float = 0.5) {
    forward(x: f32[...]) -> f32[...] {
        return dropout(x, p=p)
    }
}

# stride 0 means "the kernel size", PyTorch's stride=None.
layer MaxPool2d(kernel_size: int, stride: int = 0, padding: int = 0) {
    forward(x: f32[N, C, H, W]) -> f32[N, C, OH, OW] {
        s = kernel_size
        if stride > 0 { s = stride }
        return max_pool2d(x, kernel_size, stride=s, padding=padding)
    }
}

layer AvgPool2d(kernel_size: int, stride: int = 0, padding: int = 0) {
    forward(x: f32[N, C, H, W]) -> f32[N, C, OH, OW] {
        s = kernel_size
        if stride > 0 { s = stride }
        return avg_pool2d(x, kernel_size, stride=s, padding=padding)
    }
}

layer AdaptiveAvgPool2d(output_size: int) {
    forward(x: f32[N, C, H, W]) -> f32[N, C, output_size, output_size] {
        require(H % output_size == 0 and W % output_size == 0,
                "AdaptiveAvgPool2d needs input sizes divisible by output_size")
        return avg_pool2d(x, [H // output_size, W // output_size], stride=[H // output_size, W // output_size])
    }
}

layer Flatten(start_dim: int = 1) {
    forward(x: f32[...]) -> f32[...] {
        return flatten(x, start_dim=start_dim)
    }
}
