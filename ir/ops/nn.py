"""Compute-heavy ops: matmul, convolution and pooling (NCHW, PyTorch's conventions)."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShipeiError
from ..registry import Attr, AttrKind, FusionKind, Sample, Spelling, op
from ..types import TensorType, broadcast_shapes, dim_mod, dim_mul
from .rules import FLOATS, NUMERIC, check_dtype, same_dtype, scalar


def _matmul_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    a, b = types
    dtype = same_dtype(types)
    check_dtype(a, NUMERIC)
    if a.rank < 2 or b.rank < 2:
        raise ShipeiError(f"needs operands of rank >= 2, got {a} and {b}")
    if a.shape[-1] != b.shape[-2]:
        raise ShipeiError(f"contracts dim {a.shape[-1]} of {a} with dim {b.shape[-2]} of {b}",
                          hint=f"expected the second operand to be [..., {a.shape[-1]}, N]")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return [TensorType(dtype, batch + (a.shape[-2], b.shape[-1]))]


def _matmul_flops(operands: list, results: list, attrs: dict) -> float:
    """A multiply and an add per element of the result per element contracted."""
    return 2.0 * math.prod(results[0]) * operands[0][-1]


op("matmul", ["lhs", "rhs"], FusionKind.OUT_FUSABLE, _matmul_rule, np.matmul, flops=_matmul_flops,
   doc="numpy.matmul on rank >= 2 operands; batch dims broadcast.", dsl=Spelling(function="matmul", operator="@"),
   mixes=lambda node, batch: [(node.operands[0].type.rank - 1,), (node.operands[1].type.rank - 2,)],
   samples=[Sample(((3, 4), (4, 5))), Sample(((2, 3, 4), (4, 6))), Sample(((2, 1, 3, 4), (5, 4, 2)))])


def _pair(v: tuple[int, ...], name: str) -> tuple[int, int]:
    if len(v) == 1:
        return v[0], v[0]
    if len(v) != 2:
        raise ShipeiError(f"{name} must be one int or a pair, got {list(v)}")
    return v[0], v[1]


def _out_size(size, kernel: int, stride: int, pad: int, dilation: int, what: str) -> int:
    if not isinstance(size, int) or not isinstance(kernel, int):
        raise ShipeiError(f"{what} needs static spatial dims and kernel sizes, got {size} and {kernel}")
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    if out <= 0:
        raise ShipeiError(f"{what}: input size {size} is too small for kernel {kernel}")
    return out


def _spatial(x: TensorType, kernel, attrs: dict, what: str) -> tuple[int, int]:
    (sh, sw), (ph, pw) = _pair(attrs["stride"], "stride"), _pair(attrs["padding"], "padding")
    dh, dw = _pair(attrs.get("dilation", (1,)), "dilation")
    return (_out_size(x.shape[2], kernel[0], sh, ph, dh, what), _out_size(x.shape[3], kernel[1], sw, pw, dw, what))


def _conv2d_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    if len(types) > 3:
        raise ShipeiError(f"conv2d takes x, weight and an optional bias, got {len(types)} operands")
    x, w, *bias = types
    same_dtype(types)
    check_dtype(x, FLOATS)
    groups = attrs["groups"]
    if x.rank != 4 or w.rank != 4:
        raise ShipeiError(f"conv2d takes NCHW input and OIHW weight, got {x} and {w}")
    if groups <= 0 or x.shape[1] != dim_mul(w.shape[1], groups) or (groups != 1 and dim_mod(w.shape[0], groups)):
        raise ShipeiError(f"conv2d with groups={groups}: input channels {x.shape[1]} do not match weight {w}")
    if bias and bias[0].shape != (w.shape[0],):
        raise ShipeiError(f"conv2d's bias must be [{w.shape[0]}] for weight {w}, got {bias[0]}")
    h, wd = _spatial(x, w.shape[2:], attrs, "conv2d")
    return [x.with_shape((x.shape[0], w.shape[0], h, wd))]


def _windows(x: np.ndarray, kh: int, kw: int, stride, dilation) -> np.ndarray:
    """[N, C, OH, OW, kh, kw] view of the (already padded) input."""
    (sh, sw), (dh, dw) = stride, dilation
    win = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


def _conv2d(x: np.ndarray, w: np.ndarray, *bias: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    ph, pw = _pair(padding, "padding")
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = _windows(x, w.shape[2], w.shape[3], _pair(stride, "stride"), _pair(dilation, "dilation"))
    n, c, oh, ow = win.shape[:4]
    o = w.shape[0]
    win = win.reshape(n, groups, c // groups, oh, ow, w.shape[2], w.shape[3])
    wg = w.reshape(groups, o // groups, c // groups, w.shape[2], w.shape[3])
    out = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, o, oh, ow)
    return (out + bias[0].reshape(o, 1, 1) if bias else out).astype(x.dtype)


_CONV_ATTRS = {"stride": Attr(AttrKind.INTS, (1, 1), minimum=1), "padding": Attr(AttrKind.INTS, (0, 0), minimum=0),
               "dilation": Attr(AttrKind.INTS, (1, 1), minimum=1), "groups": Attr(AttrKind.INT, 1, minimum=1)}
def _conv2d_flops(operands: list, results: list, attrs: dict) -> float:
    """A multiply-add per output element per weight element of its group (I/groups * KH * KW), and
    the bias's add."""
    return (2.0 * math.prod(operands[1][1:]) + (len(operands) > 2)) * math.prod(results[0])


op("conv2d", ["x", "weight", "*bias"], FusionKind.OUT_FUSABLE, _conv2d_rule, _conv2d, attrs=_CONV_ATTRS,
   flops=_conv2d_flops, doc="NCHW input, OIHW weight, optional bias [O] (torch.nn.functional.conv2d).",
   mixes=lambda node, batch: [(1, 2, 3), (0, 1, 2, 3), (0,)][:len(node.operands)],
   samples=[Sample(((2, 4, 7, 7), (6, 4, 3, 3))), Sample(((2, 3, 5, 5), (4, 3, 3, 3), (4,)), {"padding": (1, 1)}),
            Sample(((1, 4, 8, 8), (6, 2, 3, 3)),
                   {"stride": (2, 2), "padding": (1, 1), "dilation": (2, 2), "groups": 2})])


def _pool_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    (x,) = types
    check_dtype(x, FLOATS)
    if x.rank != 4:
        raise ShipeiError(f"pooling takes an NCHW input, got {x}")
    kernel = _pair(attrs["kernel"], "kernel")
    ph, pw = _pair(attrs["padding"], "padding")
    if 2 * ph > kernel[0] or 2 * pw > kernel[1]:
        raise ShipeiError(f"pool padding {list(attrs['padding'])} exceeds half the kernel {list(kernel)}")
    h, w = _spatial(x, kernel, attrs, "pool")
    return [x.with_shape((x.shape[0], x.shape[1], h, w))]


def _pool(x: np.ndarray, kernel, stride, padding, fill: float) -> tuple[np.ndarray, np.ndarray]:
    (kh, kw), (ph, pw) = _pair(kernel, "kernel"), _pair(padding, "padding")
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return _windows(padded, kh, kw, _pair(stride, "stride"), (1, 1)), padded


def _max_pool2d(x, kernel, stride, padding) -> np.ndarray:
    win, _ = _pool(x, kernel, stride, padding, -np.inf)
    return win.max(axis=(-2, -1)).astype(x.dtype)


def _avg_pool2d(x, kernel, stride, padding, count_include_pad: bool) -> np.ndarray:
    win, _ = _pool(x, kernel, stride, padding, 0.0)
    total = win.sum(axis=(-2, -1))
    if count_include_pad:
        return (total / (win.shape[-1] * win.shape[-2])).astype(x.dtype)
    ones, _ = _pool(np.ones_like(x), kernel, stride, padding, 0.0)
    return (total / ones.sum(axis=(-2, -1))).astype(x.dtype)


_POOL_ATTRS = {"kernel": Attr(AttrKind.INTS, minimum=1), "stride": Attr(AttrKind.INTS, minimum=1),
               "padding": Attr(AttrKind.INTS, (0, 0), minimum=0)}
def _pool_flops(operands: list, results: list, attrs: dict) -> float:
    """One comparison or add per output element per window element."""
    return float(math.prod(results[0]) * math.prod(_pair(attrs["kernel"], "kernel")))


def _pool_mixes(node, batch: str) -> list[tuple[int, ...]]:
    return [(2, 3)]


op("max_pool2d", ["x"], FusionKind.OUT_FUSABLE, _pool_rule, _max_pool2d, attrs=dict(_POOL_ATTRS), flops=_pool_flops,
   mixes=_pool_mixes,
   samples=[Sample(((2, 3, 6, 6),), {"kernel": (2, 2), "stride": (2, 2)}),
            Sample(((1, 2, 7, 7),), {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)})])
op("avg_pool2d", ["x"], FusionKind.OUT_FUSABLE, _pool_rule, _avg_pool2d, flops=_pool_flops,
   attrs={**_POOL_ATTRS, "count_include_pad": Attr(AttrKind.BOOL, True)}, mixes=_pool_mixes,
   samples=[Sample(((2, 3, 6, 6),), {"kernel": (2, 2), "stride": (2, 2)}),
            Sample(((1, 2, 7, 7),), {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1),
                                     "count_include_pad": False})])


def _linear_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    if len(types) > 3:
        raise ShipeiError(f"linear takes x, weight and an optional bias, got {len(types)} operands")
    x, w, *bias = types
    dtype = same_dtype(types)
    check_dtype(x, NUMERIC)
    if x.rank < 2 or w.rank != 2 or x.shape[-1] != w.shape[1]:
        raise ShipeiError(f"linear needs x [..., in] and weight [out, in], got {x} and {w}")
    if bias and bias[0].shape != (w.shape[0],):
        raise ShipeiError(f"linear's bias must be [{w.shape[0]}] for weight {w}, got {bias[0]}")
    return [TensorType(dtype, x.shape[:-1] + (w.shape[0],))]


def _linear(x: np.ndarray, w: np.ndarray, *bias: np.ndarray) -> np.ndarray:
    y = np.matmul(x, w.T)
    return (y + bias[0] if bias else y).astype(x.dtype)


def _linear_flops(operands: list, results: list, attrs: dict) -> float:
    """The product, and the bias's add."""
    return (2.0 * operands[1][1] + (len(operands) > 2)) * math.prod(results[0])


def _linear_decomposition(b, operands, attrs):
    x, w, *bias = operands
    y = b("matmul", x, b("transpose", w, perm=(1, 0)))
    return [b("add", y, bias[0]) if bias else y]


op("linear", ["x", "weight", "*bias"], FusionKind.OUT_FUSABLE, _linear_rule, _linear, flops=_linear_flops,
   doc="x @ weight.T (+ bias): torch.nn.functional.linear, weight [out, in].", decomposition=_linear_decomposition,
   mixes=lambda node, batch: [(node.operands[0].type.rank - 1,), (0, 1), (0,)][:len(node.operands)],
   samples=[Sample(((2, 3, 4), (5, 4), (5,))), Sample(((3, 4), (6, 4)))])


def _attention_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    q, k, v = types
    same_dtype(types)
    check_dtype(q, FLOATS)
    if q.rank < 2 or not q.rank == k.rank == v.rank:
        raise ShipeiError(f"attention needs q, k, v of one rank >= 2, got {q}, {k} and {v}")
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ShipeiError(f"attention needs equal batch dims, got {q}, {k} and {v}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShipeiError(f"attention needs q [..., L, E], k [..., S, E] and v [..., S, Ev], got {q}, {k} and {v}")
    if not attrs["scale"] > 0:
        raise ShipeiError(f"attention's scale must be positive, got {attrs['scale']}")
    return [q.with_shape(q.shape[:-1] + (v.shape[-1],))]


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool) -> np.ndarray:
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(scale, q.dtype)
    if causal:
        length, source = scores.shape[-2:]
        scores = np.where(np.arange(source) > np.arange(length)[:, None], -np.inf, scores)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.matmul(e / e.sum(axis=-1, keepdims=True), v).astype(q.dtype)


def _attention_flops(operands: list, results: list, attrs: dict) -> float:
    """q @ k^T and its softmax (about 5 per score), then scores @ v."""
    q, k, v = operands
    batch, length, source = math.prod(q[:-2]), q[-2], k[-2]
    return batch * length * source * (2.0 * q[-1] + 5 + 2.0 * v[-1])


def _attention_workspace(operands: list, results: list, attrs: dict) -> int:
    """The scores, one per query and key: XLA's and MindSpore's attention on a CPU hold them whole
    (torch's flash attention does not: its `Target.workspace` says what it holds)."""
    q, k, _ = operands
    return math.prod(q[:-2]) * q[-2] * k[-2]


def _attention_mixes(node, batch: str) -> list[tuple[int, ...]]:
    """q mixes its depth axis; k and v their key axis (and k its depth)."""
    rank = node.operands[0].type.rank
    return [(rank - 1,), (rank - 2, rank - 1), (rank - 2,)]


def _attention_decomposition(b, operands, attrs):
    """The reference's steps: scaled scores, keys after the query masked with -inf, softmax, @ v."""
    q, k, v = operands
    perm = (*range(k.type.rank - 2), k.type.rank - 1, k.type.rank - 2)
    scores = b("mul", b("matmul", q, b("transpose", k, perm=perm)), scalar(b, attrs["scale"], q))
    if attrs["causal"]:
        length, source = q.shape[-2], k.shape[-2]
        later = b("gt", b("iota", length=source), b("reshape", b("iota", length=length), shape=(length, 1)))
        scores = b("where", later, scalar(b, -np.inf, q), scores)
    return [b("matmul", b("softmax", scores, axis=-1), v)]


op("attention", ["q", "k", "v"], FusionKind.OPAQUE, _attention_rule, _attention, flops=_attention_flops,
   workspace=_attention_workspace, mixes=_attention_mixes, decomposition=_attention_decomposition,
   samples=[Sample(((2, 3, 4), (2, 5, 4), (2, 5, 6)), {"scale": 0.5}),
            Sample(((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)), {"scale": 0.35, "causal": True}),
            Sample(((2, 5, 4), (2, 3, 4), (2, 3, 2)), {"scale": 0.5, "causal": True})],
   attrs={"scale": Attr(AttrKind.FLOAT), "causal": Attr(AttrKind.BOOL, False)},
   doc="softmax(q @ k^T * scale, masking key j > query i when causal) @ v: scaled dot-product attention.")
