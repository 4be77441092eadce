"""PyTorch target: an `nn.Module` whose parameter names are the DSL's, so state_dicts load by name.

Options of `emit`, written at the top of the generated module so that it describes itself:

- `amp="bf16"|"fp16"`: forward runs under `torch.autocast` in that dtype; float outputs are cast
  back to their declared dtype.
- `tf32=True`: float32 matmul and conv may use TF32 on NVIDIA GPUs (the `fp32_precision` API
  where PyTorch has it, else the older `allow_tf32` flags).
- `compile=True`: `load()` wraps the model in `torch.compile` (slow to start: ~17 s cold here).
- `compile="groups"`: each fused group (-O3) is a module-level function under `@torch.compile`,
  PyTorch's regional compilation: the graph between groups stays eager. Groups that compute the
  same on values of the same types (a repeated layer's) call one function, compiled once.
- `channels_last=True`: weights and 4-D inputs use the NHWC memory format convnets prefer; the
  default (None) is True for a graph that convolves or pools. oneDNN's NCHW kernels are the slow
  path on CPU: one thread here, the example cnn's 3-channel stem convolution takes 1.2 ms NCHW
  and 0.21 ms channels-last, its 2x2 max pool 1.47 ms and 0.14 ms.
- `cpu_arena=True` (the default, as ONNX Runtime's `enable_cpu_mem_arena`): on CPU, `load` has
  glibc's malloc keep freed memory in the process (`keep_freed_memory`), so the next call does not
  fault its activations in again; the example cnn's call op by op (B=16, one thread,
  `fuse_post_ops=False`) takes 1.5 ms with it and 2.4 ms without (fused, its results are never
  unmapped: 0 faults a call either way). Process-wide, as an allocator is; False leaves malloc as
  it was.
- `pack_linear=True` (the default): on CPU, in inference, a float32 linear of a param weight
  whose product is large runs on oneDNN with the weight packed once in the blocked layout its GEMM
  reads, as ONNX Runtime prepacks at session start (`packed_linear`). One core of this AMD EPYC:
  the example MLP's 64x784 @ 784x256 takes 272 us by F.linear (MKL) and 245 us packed; oneDNN's
  ~10 us more per call loses below a few million multiply-adds, which stay on F.linear. Off under
  `amp` (autocast does not see the packed kernel) and `compile` (Inductor packs for itself).
- `fuse_post_ops=True` (the default): a float32 convolution, or a linear large enough to pack
  (with `pack_linear`), followed by the add of a tensor of its shape or an activation (relu, gelu,
  sigmoid, tanh, silu), each result read by the next alone, is one call of oneDNN's kernel with
  that as its post-op, on a packed weight, as ONNX Runtime fuses Conv+Add+Relu at its default level
  (`fused_conv2d`, `fused_linear`; a convolution's add may take a relu after it). relu excepted:
  oneDNN's is max(x, 0), which maps NaN to 0, so torch's runs after the kernel, in place. A kernel
  choice, like `pack_linear`, so at every -O level, within a fused group or outside any. On CPU in
  inference, channels-last for convolutions; op by op elsewhere. Off under `amp` and `compile`, as
  `pack_linear`. The example cnn's call at -O2 (B=16, one core, 15 alternating rounds): 1.04-1.06x
  faster fused (1.37 against 1.46 ms).
- `onednn_graph=True` (the default): on CPU, `call` runs the model traced at the first call of
  each input shape and frozen, its weights constants, through TorchScript's oneDNN Graph fuser
  (LLGA), which compiles convolutions and GEMMs with their batch norms, adds and activations into
  oneDNN partitions on weights packed once, in layouts of its choosing: what ONNX Runtime does
  when it creates a session, and what torch's own calls of oneDNN do not: they set their kernel
  up on every call. Each shape's graph holds partitions of its own (the example transformer: 4-14
  MB a shape here), so a model keeps graphs for 8 shapes at most. While tracing, the kernel
  choices above take their plain torch route, which the fuser reads. Traced again where a weight
  changed since; eager past those 8 shapes, on other devices, in autograd, or where tracing fails
  or the graph computes otherwise than forward (said on stderr: the fuser reads gelu's tanh
  approximation as the exact gelu). What the fuser computes otherwise than torch on NaN is traced
  in forms it leaves to torch (`relu_keeping_nan`, `exp_keeping_nan`, `max_pool2d`'s strided
  maxima): its relu maps NaN to 0, its exp to inf, its max pool skips it; the example cnn's
  call 1.07x slower for it (see docs/known-differences.md). Attention is traced as the reference's
  steps (`attention`), where eagerly the flash kernel runs on finite inputs. Where the graph
  convolves and its inputs are float (`GUARDED_GRAPH`), a second graph of the fuser's own forms
  runs the inputs within a bound proven from the weights (`input_bound`: forward run once on
  bounds, interval arithmetic, at trace time), where no value can be NaN or overflow; the
  others, a NaN or an infinity among them, take the graph of the forms that keep NaN. The check,
  an aminmax of each input, 9 us for the ResNet's; its call 1.06x faster than the NaN-keeping
  graph alone. Only for graphs with a convolution,
  linear or matmul. One core of this AMD EPYC, -O2, call by call: the example mlp 1.16x faster
  than eager, the ResNet 1.3x, the transformer 1.1x. Off under `amp` and `compile`; on,
  `keep_buffers` is off, as the fuser does not fuse `out=` kernels.
- `reuse_buffers=True` (what -O3 asks for, having planned memory): elementwise results overwrite
  dying activations in place (`x.add_(y)`, `x.exp_()`) where `codegen.buffers` finds that
  safe, sparing the allocator and page faults. For inference: autograd refuses to differentiate
  through an overwritten value. Off under `amp`, where an in-place op would keep autocast's
  lower dtype instead of promoting.
- `keep_buffers=True` (also -O3's): f32 and f64 results of linear, matmul, softmax, gather and
  the other ops of `INTO` that are not computed in place are written (`out=`) into buffers the
  model keeps between calls, one per thread, shared by results whose lifetimes do not overlap.
  torch's CPU tensors come from malloc, which returns large blocks to the system when they are
  freed and faults them in again on the next call; on CUDA the caching allocator already keeps
  them. Outputs are always new tensors. The model's parameters do not require grad, since `out=`
  refuses autograd. Off under `amp` and `compile`, whose compiler plans its own buffers, and with
  `onednn_graph`, whose fuser does not fuse `out=` kernels.
"""

from __future__ import annotations

import functools
import keyword
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from ..ir.errors import ShipeiError
from ..ir.graph import Graph, Node, Value
from ..ir.passes.rewrite import elements
from ..ir.tolerance import TOLERANCES
from ..ir.types import LOW_PRECISION, DType
from .frameworks import require_framework
from .module import GeneratedModule, ModuleNames, write_module
from .writer import (
    Code,
    Emit,
    LayerRef,
    Rule,
    Target,
    called_helpers,
    computed_in,
    hoisted_constants,
    pads_last_dim_first,
    pair,
    param_path,
    py_literal,
    python_namespace,
    render,
)


def _reduce(fn: str):
    def rule(e: Emit, node: Node) -> str:
        axes = node.attrs["axes"]
        if axes is None:
            axes = tuple(range(node.operands[0].type.rank))
        # torch.sum widens integers to int64; keep the declared dtype.
        dtype = f", dtype={e.dtype(node.result.dtype)}" if fn == "sum" and node.result.dtype.is_int else ""
        return f"torch.{fn}({e.arg(node, 0)}, dim={tuple(axes)!r}, keepdim={node.attrs['keepdims']!r}{dtype})"

    return rule


def _slice(e: Emit, node: Node) -> str:
    index = [":"] * node.operands[0].type.rank
    for axis, start, stop, step in zip(*(node.attrs[k] for k in ("axes", "starts", "stops", "steps"))):
        index[axis] = f"{start}:{stop}" + (f":{step}" if step != 1 else "")
    return f"{e.arg(node, 0)}[{', '.join(index)}]"


def _gather(e: Emit, node: Node) -> str:
    """Indexing; a float table's rows as F.embedding, whose kernel copies whole rows: the example
    transformer's lookups (B=8, T=64, d_model 128), 45.1 against 8.1 us, 7.4 against 3.1."""
    table = node.operands[0].type
    if table.rank == 2 and node.attrs["axis"] % 2 == 0 and table.dtype.is_float:
        return f"F.embedding({e.arg(node, 1)}, {e.arg(node, 0)})"
    index = [":"] * (node.attrs["axis"] % table.rank) + [e.arg(node, 1)]
    return f"{e.arg(node, 0)}[{', '.join(index)}]"


def _pad(e: Emit, node: Node) -> str:
    pads = pads_last_dim_first(node.attrs["pads"])
    return f"F.pad({e.arg(node, 0)}, {pads!r}, value={py_literal(node.attrs['value'])})"


def _cross_entropy(e: Emit, node: Node) -> str:
    """F.cross_entropy, which takes int64 class indices only."""
    logits, labels = e.args(node)
    if node.operands[1].dtype is not DType.i64:
        labels = f"{labels}.long()"
    smoothing = node.attrs["label_smoothing"]
    return f"F.cross_entropy({logits}, {labels}{f', label_smoothing={smoothing!r}' if smoothing else ''})"


def _layer_norm(e: Emit, node: Node) -> str:
    """F.layer_norm over the weight's shape, written out where it is static: a traced graph reads a
    shape taken from an input's sizes wrong once frozen (the oneDNN graph: "Expected IntList")."""
    x, w, b = e.args(node)
    shape = node.operands[1].type.shape
    normalized = repr(tuple(shape)) if all(isinstance(d, int) for d in shape) else f"{w}.shape"
    return f"F.layer_norm({x}, {normalized}, {w}, {b}, eps={node.attrs['eps']!r})"


def _gather_into(e: Emit, node: Node) -> str:
    index = ["None"] * (node.attrs["axis"] % node.operands[0].type.rank) + [e.arg(node, 1)]
    return f"torch.ops.aten.index.Tensor_out({e.arg(node, 0)}, [{', '.join(index)}], out={e.out})"


def _iota(e: Emit, node: Node) -> str:
    return f"torch.arange({e.dim(node.attrs['length'])}, dtype={e.dtype(node.attrs['dtype'])}, device=device)"


#: Float unary ops spelled `torch.NAME(x)`, and `x.NAME_()` in place.
_UNARY = ("abs", "exp", "log", "sqrt", "sin", "cos", "tanh", "erf", "floor", "sigmoid", "neg")


#: The multiply-adds from which a product runs on a packed weight: below, oneDNN's ~10 us more per
#: call than F.linear outweighs what packing gains (measured on this AMD EPYC, one core).
PACKED_LINEAR_MACS = 2**23
#: A weight of fewer elements reaches PACKED_LINEAR_MACS only at more than 2048 rows a call.
_PACKABLE_ELEMENTS = PACKED_LINEAR_MACS // 2**11


#: Below this many multiply-adds, `narrow_linear`'s copy into place and its Python outweigh what it
#: gains (measured on this AMD EPYC, one core: 64x256 to 10 14.0 against F.linear's 13.3 us).
NARROW_LINEAR_MACS = 2**18
#: A result row shorter than this (one AVX-512 register of float32) is narrow to torch's CPU kernels.
_NARROW = 16


def _narrow_linear(weight: Value) -> bool:
    """Whether a linear's float32 weight gives rows of fewer than `_NARROW` features (`narrow_linear`)."""
    return weight.dtype is DType.f32 and weight.type.is_static and weight.type.shape[0] < _NARROW


def _narrow_rows(node: Node) -> bool:
    """Whether a softmax runs along a last axis of static length below `_NARROW` (`softmax`)."""
    shape = node.operands[0].type.shape
    return (bool(shape) and node.attrs["axis"] % len(shape) == len(shape) - 1 and isinstance(shape[-1], int)
            and shape[-1] < _NARROW)


def _where(test: Callable[[Node], bool], chosen: str, other: Rule | str) -> Rule:
    """The `chosen` spelling for the nodes `test` picks, else the `other` rule."""
    def rule(e: Emit, node: Node) -> str:
        return e.format(chosen, node) if test(node) else render(other, e, node)

    return rule


def _narrow_weight(node: Node) -> bool:
    """Whether a linear's weight is narrow (`_narrow_linear`)."""
    return _narrow_linear(node.operands[1])


def _packed_weight(node: Node) -> bool:
    """Whether a linear's weight is a float32 param (which stays put between calls) large enough to pack."""
    return _packs_linear(node.operands[1])


def _packable(weight: Value) -> bool:
    """Whether a weight stays put between calls, so that a packed copy of it can serve them."""
    return weight.param is not None and weight.dtype is DType.f32 and weight.type.is_static


def _packs_linear(weight: Value) -> bool:
    """Whether a linear's weight is packable and large enough that some batch packs it (a narrow one
    goes to `narrow_linear`, faster than oneDNN's GEMM at every batch measured)."""
    return _packable(weight) and elements(weight.type) >= _PACKABLE_ELEMENTS and not _narrow_linear(weight)


def _post_op(node: Node) -> str | None:
    """The name `fused_conv2d` and `fused_linear` know an elementwise op by, if oneDNN applies it
    to a result as it writes it (a post-op)."""
    if node.op == "gelu":
        return "gelu" if node.attrs["approximate"] == "none" else "gelu_tanh"
    return node.op if node.op in ("relu", "sigmoid", "tanh", "silu") else None


@dataclass(frozen=True)
class _Chain:
    """A convolution or linear and the nodes after it that oneDNN computes in the same call."""

    nodes: list[Node]
    other: Value | None  # the tensor the add adds, if any
    post_op: str | None  # `_post_op`'s name of the activation, if any


def _post_op_chain(head: Node, after: Iterable[Node], users: dict[Value, list[Node]], outputs: frozenset[Value],
                   linear: bool) -> _Chain | None:
    """A float32 convolution or (where `linear`) linear of a packable weight (`head`) with the add
    of a tensor of its result's type or a post-op among the nodes `after` it, which oneDNN computes
    as it writes the result. A convolution's add may be followed by a relu (torch's binary fusion
    takes no other). Each result but the last must be read by the next node alone."""
    packs = {"conv2d": _packable, "linear": _packs_linear if linear else None}.get(head.op)
    if packs is None or head.result.dtype is not DType.f32 or not packs(head.operands[1]):
        return None
    nodes, other, post_op = [head], None, None
    for node in after:
        value = nodes[-1].result
        if users.get(value) != [node] or value in outputs or post_op is not None:
            break
        if node.op == "add" and other is None:
            other = node.operands[1] if node.operands[0] is value else node.operands[0]
            if other.type != value.type:
                break
        elif _post_op(node) and (other is None or head.op == "conv2d" and node.op == "relu"):
            post_op = _post_op(node)
        else:
            break
        nodes.append(node)
    return _Chain(nodes, other, post_op) if len(nodes) > 1 else None


def fused_values(graph: Graph) -> frozenset[Value]:
    """The results the default program never holds: those a fused oneDNN call (`_post_op_chain`)
    computes on the way to its result, or, where it goes op by op in inference, overwrites in place.
    For the memory estimate; a chain across a layer's call, which the program writes op by op, is
    counted as fused."""
    users, outputs, fused = graph.users(), frozenset(graph.outputs), set()
    for i, node in enumerate(graph.nodes):
        chain = _post_op_chain(node, graph.nodes[i + 1:i + 4], users, outputs, linear=True)
        if chain:
            fused.update(n.result for n in chain.nodes[:-1])
    return frozenset(fused)


def kernel_scratch(node: Node, dims: Mapping[str, int]) -> int:
    """Bytes the default program's kernel for `node` allocates beyond its result while its operands
    are held: a narrow linear's transposed product (narrow_linear, narrow_head) or a narrow softmax's
    transposed copy (_along_first), each the result's size; for the memory estimate."""
    narrow = (node.op == "linear" and _narrow_linear(node.operands[1])
              or node.op in ("softmax", "log_softmax") and _narrow_rows(node))
    return elements(node.result.type, dims) * node.result.dtype.itemsize if narrow else 0


def _flash_attention_workspace(operands: list, results: list, attrs: dict) -> int:
    """What F.scaled_dot_product_attention holds beside its result: on a CPU its flash kernel keeps
    each query row's log-sum-exp, never the scores, and each thread a block of them, left out (one
    thread, B=8, 4 heads, T=512: 205 KB allocated beside the result, 64 KiB of it the log-sum-exp,
    where the scores are 32 MiB)."""
    q, _, _ = operands
    return math.prod(q[:-1])


def _fused_kernel(e: Emit, head: Node, after: Iterable[Node], users: dict[Value, list[Node]],
                  outputs: frozenset[Value], linear: bool) -> tuple[int, Node, str] | None:
    """`_post_op_chain` from `head` as one call of `fused_conv2d` or `fused_linear`: how many nodes
    it computes, the last of them and the call."""
    if head.op == "linear" and _narrow_linear(head.operands[1]):
        return _narrow_head(e, head, after, users, outputs)
    chain = _post_op_chain(head, after, users, outputs, linear)
    if chain is None:
        return None
    other, post_op, taken, last = chain.other, chain.post_op, len(chain.nodes), chain.nodes[-1]
    x, weight, *bias = e.args(head)
    fused = [x, weight, bias[0] if bias else "None"]
    if head.op == "conv2d":
        fused += [repr(pair(head.attrs[k])) for k in ("stride", "padding", "dilation")] + [str(head.attrs["groups"])]
    fused += [e.values[other] if other is not None else "None", repr(post_op)]
    return taken, last, f"fused_{head.op}({', '.join(fused)})"


def _narrow_head(e: Emit, head: Node, after: Iterable[Node], users: dict[Value, list[Node]],
                 outputs: frozenset[Value]) -> tuple[int, Node, str] | None:
    """A narrow linear (`head`) whose result only the next node, a softmax or log_softmax along its
    rows, reads, as one call of `narrow_head`."""
    node = next(iter(after), None)
    if (node is None or node.op not in ("softmax", "log_softmax") or users.get(head.result) != [node]
            or head.result in outputs or not _narrow_rows(node)):
        return None
    x, weight, *bias = e.args(head)
    return 2, node, f"narrow_head({x}, {weight}, {bias[0] if bias else 'None'}, torch.{node.op})"


def _rsqrt(spelling: str) -> Rule:
    """rsqrt's 16-bit CPU kernel rounds sqrt before the reciprocal where it does not vectorize
    (small tensors, loop tails): a quarter of f16 results came out 1 ulp off, rsqrt(0.7085) 1.1875.
    So 16-bit rsqrt is computed in f32, in place or not."""
    return computed_in(spelling, LOW_PRECISION, DType.f32, "{x}.to({dtype})")


def _pairs(template: str) -> Rule:
    """`template` with each window attribute as an (h, w) pair. torch takes one int for both, but
    its ONNX exporter copies a 1-tuple as it is, and ONNX Runtime refuses the model ("Attribute
    dilations has incorrect size")."""
    def rule(e: Emit, node: Node) -> str:
        return e.format(template, node, **{k: pair(node.attrs[k]) for k in _WINDOW if k in node.attrs})

    return rule


_WINDOW = ("kernel", "stride", "padding", "dilation")

RULES = {
    **{name: f"torch.{name}({{0}})" for name in (*_UNARY, "relu", "logical_not")},
    "rsqrt": _rsqrt("torch.rsqrt({0})"),
    "silu": "F.silu({0})",
    "gelu": "F.gelu({0}, approximate={approximate})",
    "dropout": "F.dropout({0}, p={p}, training=self.training)",
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "pow": "torch.pow({0}, {1})",
    "maximum": "torch.maximum({0}, {1})", "minimum": "torch.minimum({0}, {1})",
    "eq": "{0} == {1}", "ne": "{0} != {1}", "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}",
    "ge": "{0} >= {1}",
    "logical_and": "torch.logical_and({0}, {1})", "logical_or": "torch.logical_or({0}, {1})",
    "where": "torch.where({0}, {1}, {2})",
    "cast": "{0}.to({dtype})",
    "matmul": "{0} @ {1}",
    "linear": _where(_narrow_weight, "narrow_linear({args})", "F.linear({args})"),
    "attention": "attention({0}, {1}, {2}, {scale}, {causal})",
    "conv2d": _pairs("F.conv2d({args}, stride={stride}, padding={padding}, dilation={dilation}, groups={groups})"),
    "max_pool2d": _pairs("max_pool2d({0}, {kernel}, stride={stride}, padding={padding})"),
    "avg_pool2d": _pairs("F.avg_pool2d({0}, {kernel}, stride={stride}, padding={padding}, "
                         "count_include_pad={count_include_pad})"),
    "reduce_sum": _reduce("sum"), "reduce_mean": _reduce("mean"),
    "reduce_max": _reduce("amax"), "reduce_min": _reduce("amin"),
    "softmax": _where(_narrow_rows, "softmax({0}, {axis})", "F.softmax({0}, dim={axis})"),
    # Its 16-bit CPU kernel subtracts a rounded logsumexp, which cancels: bf16 log_softmax of
    # [15.125, 9.75, ...] gave -0.0078 for -0.0046.
    "log_softmax": computed_in(_where(_narrow_rows, "log_softmax({0}, {axis})", "F.log_softmax({0}, dim={axis})"),
                               LOW_PRECISION, DType.f32, "{x}.to({dtype})"),
    # Its 16-bit CPU kernel cancels on rows of (nearly) equal values: a one-element f16 row gave
    # 0.6323 where the result is the bias, 0.6274.
    "layer_norm": computed_in(_layer_norm, LOW_PRECISION, DType.f32, "{x}.to({dtype})"),
    # Its CPU kernel folds weight and variance into one scale in the 16-bit dtype, rounding twice.
    "batch_norm": computed_in("F.batch_norm({0}, {1}, {2}, {3}, {4}, training=False, eps={eps})",
                              LOW_PRECISION, DType.f32, "{x}.to({dtype})"),
    "cross_entropy": _cross_entropy,
    "reshape": "torch.reshape({0}, {shape})",
    "transpose": "torch.permute({0}, {perm})",
    "broadcast_to": "{0}.expand({shape})",
    "concat": "torch.cat([{args}], dim={axis})",
    "split": lambda e, n: (f"torch.split({e.arg(n, 0)}, {n.attrs['sizes']!r}, dim={n.attrs['axis']})"
                           if len(n.attrs["sizes"]) > 1 else e.arg(n, 0)),
    "slice": _slice,
    "gather": _gather,
    "pad": _pad,
    "iota": _iota,
    "constant": "",  # constants become buffers; see _constant_ref
}

_RUNTIME = '''
def available_devices():
    """Devices this machine offers, preferred first."""
    return (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]


def enable_tf32():
    """Let float32 matmul and conv use TF32 tensor cores (NVIDIA GPUs only)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # PyTorch >= 2.9
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def load(weights=WEIGHTS, device="cpu"):
    """The model with weights from a .safetensors path or a name -> array mapping, on `device`."""
    model = {name}()
    model.load_state_dict({{key: _tensor(value) for key, value in checked_weights(weights).items()}})
    model = model.to(device).eval()
    if CHANNELS_LAST:  # the 4-D weights; Module.to would refuse a 5-D one (a weight reshaped at -O3 --freeze)
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    if TF32:
        enable_tf32()
    if CPU_ARENA and device == "cpu":
        keep_freed_memory()
    return torch.compile(model) if COMPILE is True else model


def keep_freed_memory():
    """What ONNX Runtime's CPU memory arena does for its tensors, for torch's, which come from
    malloc: glibc serves blocks of up to 32 MiB (the most it takes) from its heap and keeps up to 64
    MiB of the heap free rather than trimmed, so an activation freed at the end of a call serves the
    next instead of going back to the system and faulting in again. Setting either fixes both:
    glibc's default raises the first as large blocks are freed, which this holds at its top. With 4
    MiB, the transformer at d_model 512, B=32, T=64 faulted 78k pages a call (365 ms; 270 ms and 3
    faults with 32 MiB, 294 ms and 20k faults with glibc's default). For the whole process; nothing
    where the C library is not glibc, or where the process set malloc's thresholds itself (as
    `shipei tune` does to measure memory steadily). CUDA tensors have torch's caching allocator."""
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ) or "malloc" in os.environ.get(
            "GLIBC_TUNABLES", ""):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
    mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD


def _tensor(x):
    """A numpy array as a torch tensor on its memory. At every call of `run`: cheap attributes only
    (dtype.name is Python code; with torch.as_tensor it cost the example cnn 27 us a call)."""
    x = np.asarray(x, order="C")  # torch refuses negative strides (x[::-1])
    if x.dtype.kind == "V":  # ml_dtypes' bfloat16: numpy has none of its own, torch takes it via float32
        return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(x)


class KeptBuffers(threading.local):
    """Where forward writes results it keeps memory for between calls (one set per thread), so
    that large results do not go back to malloc and fault in again on every call. Results of one
    type whose lifetimes do not overlap share a buffer, as shipei's memory plan assigns them.
    A buffer takes the dtype and device of an operand at run time, so a model moved with `.to()`
    keeps working; those made under inference mode serve only calls under it, as torch requires."""

    def __init__(self):
        self.buffers = {{}}  # (slot, dtype, device, inference mode) -> a flat tensor
        self.views = {{}}    # (slot, shape, dtype, device, inference mode) -> a view of its buffer

    def __reduce__(self):  # a copy of the model starts with buffers of its own
        return type(self), ()

    def get(self, slot, shape, like):
        """Buffer `slot` as a tensor of `shape`, in `like`'s dtype and on its device."""
        key = (slot, shape, like.dtype, like.device, torch.is_inference_mode_enabled())
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = self._view(key)
        return view

    def _view(self, key):
        slot, shape, dtype, device, inference = key
        size = torch.Size(shape).numel()
        where = (slot, dtype, device, inference)
        buffer = self.buffers.get(where)
        if buffer is None or buffer.numel() < size:
            buffer = self.buffers[where] = torch.empty(size, dtype=dtype, device=device)
            self.views = {{}}  # views of the buffer it replaces
        elif len(self.views) > 256:
            self.views = {{}}  # many shapes came: start over rather than hold a view of each
        return buffer[:size].view(shape)


def call(model, *tensors):
    """Tensors in, a tuple of tensors out: a pipeline stage's step, with no numpy in between. The
    oneDNN graph takes the tensors as they come: it reorders an input itself where its kernel reads
    channels-last, sooner than a copy ahead (the example cnn, B=16: 14 us a call), and it records
    no autograd (its weights are constants, its inputs do not require grad), so it runs outside
    inference mode, whose switch costs 2-3 us a call."""
    forward = _onednn_graph(model, tensors) if ONEDNN_GRAPH and tensors and tensors[0].is_cpu else None
    outputs = forward(*tensors) if forward is not None else _eager(model, tensors)
    return outputs if isinstance(outputs, tuple) else (outputs,)


@torch.inference_mode()
def _eager(model, tensors):
    """forward, op by op, in inference mode, its 4-D inputs copied channels-last where the program is."""
    if CHANNELS_LAST:
        tensors = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in tensors]
    return model(*tensors)


def _onednn_graph(model, tensors):
    """The forward of the model traced on tensors of these shapes, dtypes and strides and frozen,
    its weights constants, so that TorchScript's oneDNN Graph fuser compiles its convolutions and
    GEMMs with their elementwise neighbours into oneDNN partitions on prepacked weights: what ONNX
    Runtime does when it creates a session. Traced at the first call of a shape, again when a
    weight has changed since (written in place, or its data replaced). None, and forward runs
    eagerly, past ONEDNN_GRAPH_SHAPES shapes, for inputs that require grad, or where tracing fails
    (said on stderr). Two graphs a shape where GUARDED_GRAPH: the fuser's own forms of relu, exp,
    max pool and attention (`fast`) for inputs within the bound `input_bound` proves for the
    weights, the forms that keep NaN for the others; each traced at the first call that takes it."""
    graphs = _GRAPHS.get(model)
    if graphs is None:
        graphs = _GRAPHS[model] = {{}}
    key = tuple([(t.shape, t.stride(), t.dtype, t.requires_grad) for t in tensors])  # inputs requiring grad miss it
    entry = graphs.get(key)
    if entry is None or [(w._version, w.data_ptr()) for w in entry.weights] != entry.versions:
        if entry is None and len(graphs) >= ONEDNN_GRAPH_SHAPES or any(t.requires_grad for t in tensors):
            return None
        entry = graphs[key] = _Graphs(model, tensors)
    within = entry.bound is not None and _within(tensors, entry.bound)
    for fast in (True, False) if within else (False,):  # the exact graph where the fast one failed
        if fast not in entry.forward:
            graph = _trace(model, tensors, fast)
            entry.forward[fast] = graph and graph.forward  # forward itself: the Module's __call__ costs 2 us
        if entry.forward[fast] is not None:
            return entry.forward[fast]
    return None


class _Graphs:
    """A shape's graphs (exact and fast, as traced: `forward`), the input bound for the fast one and
    the weights they were traced with, at their versions."""

    def __init__(self, model, tensors):
        self.weights = [*model.parameters(), *model.buffers()]
        self.versions = [(w._version, w.data_ptr()) for w in self.weights]
        self.bound = input_bound(model, tensors) if GUARDED_GRAPH else None  # noqa: F821  defined where it is True
        self.forward = {{}}  # fast (a bool) -> the graph's forward, or None where tracing failed


def _within(tensors, bound):
    """Whether every element of the tensors lies within +-bound (NaN does not): one aminmax each,
    9 us for the example cnn's 16x3x32x32. A channels-last tensor (a pipeline stage's input,
    another stage's result) is read in its memory's order: 14 us for a 4x16x16x16, where aminmax
    strided across it took 47."""
    for t in tensors:
        if t.numel():
            if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
                t = t.permute(0, 2, 3, 1)
            low, high = torch.aminmax(t)
            if not -bound <= float(low) <= float(high) <= bound:
                return False
    return True


def _trace(model, tensors, fast=False):
    """The model traced and frozen with the oneDNN Graph fuser on, run until it has fused (a
    profiling run, then the one that compiles) and checked against forward on `tensors`; None where
    TorchScript refuses it or computes another result (the fuser has made a 0-d result 1-d). One
    trace at a time: the fuser's switch and the warnings filter are the process's. The exact graph
    is traced and checked on the inputs with NaN and infinities made 0 (copies of their strides,
    which the graph is specialised to), as it is traced at the first call that holds them, where a
    kernel's inf - inf is no difference of the fuser's."""
    if not fast:
        tensors = [_finite_copy(t) if t.is_floating_point() and not bool(torch.isfinite(t).all()) else t
                   for t in tensors]
    with _TRACING, torch.inference_mode():
        enabled = torch._C._jit_llga_enabled()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation, and the tracer's notes on Python values
                torch.jit.enable_onednn_fusion(True)
                _FAST_TRACE.on = fast
                traced = torch.jit.trace(model, tuple(tensors), check_trace=False)
                _refuse_misread(traced.inlined_graph)
                graph = torch.jit.freeze(traced)
                for _ in range(2):
                    graph(*tensors)
                _check_same(graph(*tensors), _eager(model, tensors))
                return graph
        except Exception as error:  # noqa: BLE001  any refusal leaves the model to run eagerly
            print(f"shipei: torch: {{type(model).__name__}} runs eagerly, not as a oneDNN graph: {{error}}"
                  .splitlines()[0], file=sys.stderr)
            return None
        finally:
            _FAST_TRACE.on = False
            torch.jit.enable_onednn_fusion(enabled)


def _refuse_misread(graph):
    """Raise where the traced graph holds what torch's oneDNN Graph bridge (2.13) reads wrong once
    frozen: a tensor read, itself or through views, by two of the adds, multiplies and divisions
    the fuser chains into one partition, broadcast by one of them at least (`x * s + s`,
    `x * (s / n) + s`, s a row), which crashes the process at that partition's first run
    (weights, constants once frozen, it reads right: counted too, as rare); a layer norm over a
    shape taken from a tensor's sizes, which it reads as garbage."""
    reads = {{}}  # tensor -> (reads, whether one broadcasts it)
    for node in graph.nodes():
        if node.kind() == "aten::layer_norm" and not _constant_list(node.inputsAt(1)):
            raise ValueError("a layer norm's shape is read from a tensor's sizes, which the fuser reads wrong "
                             "(torch 2.13)")
        if node.kind() not in _CHAINED_BINARY:
            continue
        result = node.output().type().sizes()
        for operand in list(node.inputs())[:2]:
            if not isinstance(operand.type(), torch._C.TensorType):
                continue  # a number
            broadcast = operand.type().sizes() != result
            while operand.node().kind() in _VIEWS:
                operand = operand.node().inputsAt(0)
            count, any_broadcast = reads.get(operand.unique(), (0, False))
            reads[operand.unique()] = count, any_broadcast = count + 1, any_broadcast or broadcast
            if count >= 2 and any_broadcast:
                raise ValueError(f"%{{operand.debugName()}} is read by two of its adds, multiplies or divisions, "
                                 "broadcast, which the fuser's partitions read wrong (torch 2.13)")


def _constant_list(value):
    """Whether a traced list is a constant, or built of constants only."""
    node = value.node()
    return node.kind() == "prim::Constant" or (
        node.kind() == "prim::ListConstruct" and all(v.node().kind() == "prim::Constant" for v in node.inputs()))


def _finite_copy(t):
    """t with NaN and infinities made 0, at t's strides."""
    copy = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
    return copy.copy_(torch.nan_to_num(t, 0.0, 0.0, 0.0))


def _fast_trace():
    """Whether this thread traces the fast graph (`_onednn_graph`), of the fuser's own forms."""
    return getattr(_FAST_TRACE, "on", False)


def _check_same(got, expected):
    """Raise unless the traced graph's results have forward's shapes and dtypes and, within the
    tolerance shipei holds a target to, its values: the fuser reads gelu's tanh approximation as
    the exact gelu (0.0005 apart at most), which only the values tell."""
    got, expected = ((x,) if isinstance(x, torch.Tensor) else x for x in (got, expected))
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"result {{i}} is {{a.dtype}} {{list(a.shape)}}, forward's {{b.dtype}} {{list(b.shape)}}")
        if b.is_floating_point():
            rtol, atol = _TOLERANCES[b.dtype]
            same = torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        else:
            same = torch.equal(a, b)
        if not same:
            raise ValueError(f"result {{i}} differs from forward's")


{tolerances}
_TRACING = threading.Lock()
_CHAINED_BINARY = frozenset({{"aten::add", "aten::mul", "aten::div", "aten::add_", "aten::mul_", "aten::div_"}})
_VIEWS = frozenset({{"aten::reshape", "aten::view", "aten::unsqueeze", "aten::squeeze", "aten::expand",
                    "aten::expand_as", "aten::view_as", "aten::reshape_as", "aten::flatten", "aten::detach"}})
_FAST_TRACE = threading.local()  # .on while this thread traces the fast graph
_GRAPHS = weakref.WeakKeyDictionary()  # model -> {{input signature: _Graphs}}
ONEDNN_GRAPH_SHAPES = 8  # the shapes a model keeps a graph for, as torch.compile's recompile limit


def accept(x, device="cpu"):
    """Another framework's tensor (anything with __dlpack__) or a numpy array, as a torch tensor on
    `device`, and whether it was copied: DLPack hands over the same memory; what it cannot carry
    is copied through numpy."""
    try:
        return torch.from_dlpack(x).to(device), False
    except (TypeError, RuntimeError, BufferError):
        return _tensor(np.asarray(x)).to(device), True


def export(tensor):
    """A result as other frameworks take it: torch tensors speak DLPack themselves, strides and all
    (a channels-last result, or a view of a oneDNN graph's wider one: see _padded_head); the
    receiving program's `accept` copies what its framework takes only in row-major order, and says
    so."""
    return tensor


def to_numpy(tensor):
    """A result as a numpy array in row-major order: copied by numpy where it is not (a view of a
    wider result, a channels-last one)."""
    array = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy(force=True)
    return array if array.flags.c_contiguous else array.copy()


def gradients(model, *tensors):
    """The outputs (the loss, a scalar, first) and the loss's gradient by each trainable param,
    name -> tensor, by autograd (zeros for a param the loss does not read): what a train step takes."""
    named = dict(model.named_parameters())
    with torch.enable_grad():
        for param in named.values():
            param.requires_grad_(True)
        outputs = model(*tensors)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        grads = torch.autograd.grad(outputs[0], list(named.values()), allow_unused=True, materialize_grads=True)
    return tuple(output.detach() for output in outputs), dict(zip(named, grads))


def train_step(model, update, state, scalars, *tensors):
    """One optimizer step on one batch: the loss's gradients by autograd, then `update` (the
    optimizer's own generated program, `as_function` of its module) on the params and the
    gradients each as one flat vector, as torch's fused optimizers hold them. The params are
    views of their vector, which the update overwrites in place, as it does the state it is
    given. The inputs are tensors or numpy arrays. The outputs (the loss first) and the
    optimizer's new state."""
    params = list(model.parameters())
    outputs, grads = gradients(model, *(torch.as_tensor(x, device=params[0].device) for x in tensors))
    flat = _FLAT_PARAMS.get(model)
    if flat is None or any(param.data_ptr() != at.data_ptr() for param, at in zip(params, _views(flat, params))):
        flat = _FLAT_PARAMS[model] = torch.cat([param.detach().reshape(-1) for param in params])
        torch.nn.utils.vector_to_parameters(flat, params)
    with torch.no_grad():
        device = flat.device
        new = update(flat, torch.cat([grad.reshape(-1) for grad in grads.values()]), *state,
                     *(torch.tensor(scalar, device=device) for scalar in scalars))
    new = new if isinstance(new, tuple) else (new,)
    if new[0].data_ptr() != flat.data_ptr():  # the update wrote its result elsewhere
        flat.copy_(new[0])
    return outputs, new[1:]


_FLAT_PARAMS = weakref.WeakKeyDictionary()  # model -> the vector its params are views of


def _views(flat, params):
    return torch.split(flat, [param.numel() for param in params])


def as_function(model):
    """This program as a function of tensors, for another program's train step to call."""
    return model


def parameters(model):
    """The trainable params, name -> tensor."""
    return {{name: param.detach() for name, param in model.named_parameters()}}


@torch.no_grad()
def assign(model, values):
    """Write new values (name -> tensor) over params and buffers in place: a train step's update."""
    named = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, value in values.items():
        named[name].copy_(value)


def run(model, inputs, device="cpu"):
    """Numpy in, numpy out."""
    tensors = [_tensor(x) for x in inputs]
    if device != "cpu":
        tensors = [t.to(device) for t in tensors]
    return [to_numpy(y) for y in call(model, *tensors)]
'''

_DTYPES = {DType.f16: "torch.float16", DType.bf16: "torch.bfloat16", DType.f32: "torch.float32",
           DType.f64: "torch.float64", DType.i32: "torch.int32", DType.i64: "torch.int64", DType.bool: "torch.bool"}

#: shipei's tolerance table (ir/tolerance.py), for `_check_same` in the generated program.
_RUNTIME = _RUNTIME.replace("{tolerances}", "_TOLERANCES = {{" + ", ".join(
    f"{_DTYPES[dtype]}: ({tol.rtol!r}, {tol.atol!r})" for dtype, tol in TOLERANCES.items() if dtype.is_float)
    + "}}  # shipei's tolerance table: (rtol, atol)")

_PACKED = '''
def _packed(weight, pack, *hint):
    """`pack(weight, *hint)`, oneDNN's copy of `weight` in the blocked layout its kernel reads (the
    hint, of the first call's shapes, helps it choose; any works): made at the first call, and again
    when the weight has changed since (written in place, or its data replaced); dropped with it."""
    key, version = id(weight), (weight._version, weight.data_ptr())
    entry = _PACKED_WEIGHTS.get(key)
    if entry is None or entry[0]() is not weight or entry[1] != version:
        entry = _PACKED_WEIGHTS[key] = (weakref.ref(weight, lambda _: _PACKED_WEIGHTS.pop(key, None)), version,
                                        pack(weight, *hint))
    return entry[2]


_ONEDNN = torch.backends.mkldnn.is_available()
_PACKED_WEIGHTS = {}  # id(weight) -> (a weak reference to it, its version, its packed copy)
'''

_GEMM_PACKS = '''
def _gemm_packs(x, weight):
    """Whether `x @ weight.T` runs on oneDNN's GEMM with the weight packed: on CPU, in inference
    (it has no derivative), for a float32 product of PACKED_LINEAR_MACS multiply-adds or more."""
    return (_ONEDNN and x.is_cpu and x.dtype == torch.float32 and not _plain()
            and x.numel() * weight.shape[0] >= PACKED_LINEAR_MACS)


def _gemm_weight(x, weight):
    """`weight` packed for oneDNN's GEMM, for products of about x's rows."""
    return _packed(weight, _reorder_linear, x.numel() // x.shape[-1])


_reorder_linear = torch.ops.mkldnn._reorder_linear_weight if _ONEDNN else None
''' + f"PACKED_LINEAR_MACS = {PACKED_LINEAR_MACS}  # below it, oneDNN's fixed cost per call outweighs packing\n"

_PACKED_LINEAR = '''
def packed_linear(x, weight, bias=None, out=None):
    """F.linear; on oneDNN's GEMM with the weight packed where that pays (`_gemm_packs`). `out`, a
    buffer the model keeps, takes F.linear's result; the packed GEMM returns a new one."""
    if not _gemm_packs(x, weight):
        return F.linear(x, weight, bias) if out is None else torch.ops.aten.linear.out(x, weight, bias, out=out)
    return torch.ops.mkldnn._linear_pointwise(x, _gemm_weight(x, weight), bias, "none", [], "")
'''

_FUSED_LINEAR = '''
def fused_linear(x, weight, bias, other, post_op):
    """`post_op` of F.linear(x, weight, bias) + `other`, without either where it is None (one of
    them is not): where packed_linear packs, one call of oneDNN's GEMM, which adds `other` or
    applies `post_op` as it writes its result (it takes one of them); elsewhere op by op."""
    if not _gemm_packs(x, weight):
        return _post_ops(F.linear(x, weight, bias), other, post_op)
    packed = _gemm_weight(x, weight)
    if other is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, packed, bias, "add")
    *_, attr, algorithm = _POST_OPS[post_op]
    return _after_kernel(torch.ops.mkldnn._linear_pointwise(x, packed, bias, attr, [], algorithm), post_op)
'''

_FUSED_CONV2D = '''
def fused_conv2d(x, weight, bias, stride, padding, dilation, groups, other, post_op):
    """`post_op` of F.conv2d(x, weight, bias, ...) + `other`, without either where it is None
    (after an add, only relu): on CPU, in inference, for a float32 channels-last x, one call of
    oneDNN's convolution on a packed copy of the weight, which adds `other` and applies `post_op` as
    it writes its result, as ONNX Runtime's fused Conv does; elsewhere op by op."""
    if not (_ONEDNN and x.is_cpu and x.dtype == torch.float32 and not _plain()
            and x.is_contiguous(memory_format=torch.channels_last)):
        return _post_ops(F.conv2d(x, weight, bias, stride, padding, dilation, groups), other, post_op)
    packed = _packed(weight, _reorder_conv2d, padding, stride, dilation, groups, x.shape)
    if other is not None:  # post_op is None or relu, which torch applies after the kernel
        y = torch.ops.mkldnn._convolution_pointwise.binary(x, other, packed, bias, padding, stride, dilation, groups,
                                                           "add", None, None, [], "")
    else:
        *_, attr, algorithm = _POST_OPS[post_op]
        y = torch.ops.mkldnn._convolution_pointwise(x, packed, bias, padding, stride, dilation, groups, attr, [],
                                                    algorithm)
    return _after_kernel(y, post_op)


_reorder_conv2d = torch.ops.mkldnn._reorder_convolution_weight if _ONEDNN else None
'''

_POST_OPS_CODE = '''
def _post_ops(y, other, post_op):
    """`post_op` of y + `other`, op by op: what the fused kernels compute in one. y is a fresh
    result, which they overwrite where autograd does not record, as -O3's memory plan counts on."""
    in_place = not _plain()  # oneDNN Graph fuses only the out-of-place ops
    if other is not None:
        y = y.add_(other) if in_place else y + other
    return y if post_op is None else _POST_OPS[post_op][in_place](y)


def _fresh_relu(y):
    """relu of a fresh result that the next op alone reads, where autograd records or TorchScript
    traces: overwritten while tracing, one pass instead of a copy (`relu_keeping_nan`)."""
    return relu_keeping_nan(y, inplace=torch.jit.is_tracing())


def _after_kernel(y, post_op):
    """y, a fresh result of oneDNN's kernel, with `post_op` applied if oneDNN did not: relu, which
    oneDNN computes as max(x, 0) and so maps NaN to 0 (as a post-op and as its clip), where torch's
    relu keeps NaN. Overwritten in place."""
    return torch.relu_(y) if post_op == "relu" else y


# post-op -> (torch's function of a fresh result, its in-place form, oneDNN's name for it, its algorithm)
_POST_OPS = {
    "relu": (_fresh_relu, torch.relu_, "none", ""),  # oneDNN's relu drops NaN: applied after it, by _after_kernel
    "gelu": (F.gelu, torch.ops.aten.gelu_, "gelu", "none"),
    "gelu_tanh": (lambda y: F.gelu(y, approximate="tanh"), lambda y: torch.ops.aten.gelu_(y, approximate="tanh"),
                  "gelu", "tanh"),
    "sigmoid": (torch.sigmoid, torch.sigmoid_, "sigmoid", ""),
    "tanh": (torch.tanh, torch.tanh_, "tanh", ""),
    "silu": (F.silu, lambda y: F.silu(y, inplace=True), "swish", ""),
}
'''

_MAX_POOL2D = '''
def max_pool2d(x, kernel, stride, padding):
    """F.max_pool2d; on CPU, where autograd does not record, the maximum over each window's rows,
    then over its columns, of strided views: torch's CPU kernel also computes the indices autograd
    would need. One core, the example cnn's 2x2 pool of 16x16x32x32: 138 us channels-last by
    F.max_pool2d, 41 us so (NCHW: 1417 and 87 us). Where the input is channels-last and the windows
    overlap or are padded, F.max_pool2d's kernel is the faster. NaN propagates, as in the pool. While
    tracing, always so, those windows too: oneDNN Graph would compute F.max_pool2d, and its pool
    maps NaN to the window's other values; it leaves torch.maximum to torch. The fast graph's is
    F.max_pool2d, which the fuser fuses (`_onednn_graph`)."""
    tracing = torch.jit.is_tracing()
    if tracing and _fast_trace() or not tracing and (not x.is_cpu or x.dtype != torch.float32 or _plain() or (
            (stride != kernel or padding != (0, 0)) and x.is_contiguous(memory_format=torch.channels_last))):
        return F.max_pool2d(x, kernel, stride=stride, padding=padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph), value=float("-inf"))
    height, width = int(x.shape[2]), int(x.shape[3])  # ints, not sizes a trace computes with on each call
    rows = _window_max(x, 2, kh, sh, (height - kh) // sh + 1)
    pooled = _window_max(rows, 3, kw, sw, (width - kw) // sw + 1)
    return pooled.clone() if kh == kw == 1 else pooled  # 1x1 windows leave views of x: the pool's result is new


def _window_max(x, dim, size, step, count):
    """The maximum of each of `count` windows of `size` along `dim`, `step` apart (aten's slice: one
    op a view, where indexing traces one per dimension)."""
    span = step * (count - 1) + 1
    out = torch.ops.aten.slice(x, dim, 0, span, step)
    for i in range(1, size):
        out = torch.maximum(out, torch.ops.aten.slice(x, dim, i, i + span, step))
    return out
'''

_NARROW_LINEAR = f'''
NARROW_LINEAR_MACS = {NARROW_LINEAR_MACS}  # below it, narrow_linear's copy and Python outweigh its gain


def narrow_linear(x, weight, bias=None, out=None):
    """F.linear (into `out`, a buffer the model keeps, where given) of a weight of few rows; on CPU,
    in inference, for a float32 product of NARROW_LINEAR_MACS multiply-adds or more, as
    (weight @ x.T).T copied into place: MKL's GEMM writes rows this narrow slowly and their
    transpose quickly. One core of this AMD EPYC, F.linear against this: 64x784 to 10 35.8 against
    24.1 us, 256x128 to 10 28.0 against 19.3, 512x256 to 15 157 against 79."""
    if not (x.is_cpu and x.dtype == torch.float32 and not _plain()
            and x.numel() * weight.shape[0] >= NARROW_LINEAR_MACS):
        return F.linear(x, weight, bias) if out is None else torch.ops.aten.linear.out(x, weight, bias, out=out)
    product = _transposed_product(x, weight, bias).t()
    if out is None:
        return product.contiguous().view(*x.shape[:-1], weight.shape[0])
    out.view(-1, weight.shape[0]).copy_(product)
    return out
'''

_TRANSPOSED_PRODUCT = '''
def _transposed_product(x, weight, bias):
    """F.linear(x, weight, bias) of x's rows, transposed: weight @ rows.T, plus the bias's column."""
    rows = (x if x.dim() == 2 else x.reshape(-1, x.shape[-1])).t()
    return torch.mm(weight, rows) if bias is None else torch.addmm(bias.unsqueeze(1), weight, rows)
'''

_SOFTMAX = '''
def softmax(x, dim, out=None):
    """torch.softmax along x's last dimension, `dim`, whose rows are narrow; see _along_first."""
    return _along_first(torch.softmax, x, out)
'''

_LOG_SOFTMAX = '''
def log_softmax(x, dim, out=None):
    """torch.log_softmax along x's last dimension, `dim`, whose rows are narrow; see _along_first."""
    return _along_first(torch.log_softmax, x, out)
'''

_NARROW_HEAD = '''
def narrow_head(x, weight, bias, kernel):
    """kernel(F.linear(x, weight, bias), -1), a softmax or log_softmax over the rows of a linear of a
    weight of few rows; on CPU, in inference, for float32 results of 256 elements or more, computed
    transposed: the product as narrow_linear writes it, then the kernel along its first dimension
    as _along_first runs it, with one copy into place at the end where the two would take three.
    One core of this AMD EPYC: the example mlp's head (64x256 to 10, softmax) 26.1 against 13.5 us.
    While TorchScript traces, as _padded_head computes it."""
    if torch.jit.is_tracing():
        return _padded_head(x, weight, bias, kernel)
    if not (x.is_cpu and x.dtype == torch.float32 and not _plain()
            and x.numel() // x.shape[-1] * weight.shape[0] >= 256):
        return _along_first(kernel, F.linear(x, weight, bias), None)
    result = kernel(_transposed_product(x, weight, bias), 0).t().contiguous()
    return result if x.dim() == 2 else result.view(*x.shape[:-1], weight.shape[0])


def _padded_head(x, weight, bias, kernel):
    """narrow_head as TorchScript traces it (for the oneDNN graph, or any trace of the model): the
    product with the weight padded to HEAD_ROWS rows, zeros whose bias is -inf, which softmax and
    log_softmax read as absent (exp(-inf) is 0), so that torch's kernel runs along rows of whole
    vectors; the result, a view of the first columns, is not copied into place (`run` copies in
    numpy). Freezing folds the padded weight and bias into constants. The example mlp (B=64) as a
    graph, one core of this AMD EPYC: 249.6 us with the head computed so, 259.1 with its softmax
    transposed (_along_first), 260.6 row by row."""
    rows, pad = weight.shape[0], HEAD_ROWS - weight.shape[0]
    weight = torch.cat([weight, weight.new_zeros(pad, weight.shape[1])])
    bias = torch.cat([weight.new_zeros(rows) if bias is None else bias, weight.new_full((pad,), float("-inf"))])
    return kernel(F.linear(x, weight, bias), -1)[..., :rows]


''' + f"HEAD_ROWS = {_NARROW}  # a row of this many float32s fills a vector register; narrow heads have fewer\n"

_ALONG_FIRST = '''
def _along_first(kernel, x, out):
    """`kernel` along x's last dimension (into `out` where given); on CPU, for 256 elements or more,
    computed with that dimension moved first: torch's CPU kernel takes a row of the last dimension
    at a time, and one narrower than a vector register in scalar code, while along the first it
    runs vectorized across the rest. One core of this AMD EPYC, f32, torch's kernel against this:
    (64, 10) 12.1 against 6.6 us, (8, 64, 10) 90 against 16; on fewer rows the two copies cost more,
    (16, 10) 3.8 against 5.8."""
    if not x.is_cpu or x.numel() < 256:
        return kernel(x, -1) if out is None else kernel(x, -1, out=out)
    moved = kernel(x.movedim(-1, 0).contiguous(), 0).movedim(0, -1)
    return moved.contiguous() if out is None else out.copy_(moved)
'''

_ATTENTION = '''
def attention(q, k, v, scale, causal):
    """F.scaled_dot_product_attention where q, k and v are finite; else the reference's steps
    (`_attention_steps`). On a NaN or an infinity the CPU flash kernel computes rows finite that
    the reference's softmax makes NaN (its running maximum skips a NaN score; a row of -inf). The
    check, whether their sums are finite, costs 3 reductions (35-45 us a call on 8x4x64x32): the
    example transformer's eager call (B=8, T=64, one core) 1.03x slower. In a captured graph
    (TorchScript's trace, as for the oneDNN graph, or torch.compile's), where a branch on the values
    would be frozen, always the steps: that transformer's graph 1.02-1.03x slower than with the
    flash kernel; the fast graph's is the flash kernel (`_onednn_graph`). On CUDA the check waits
    for the GPU (bool of a tensor)."""
    tracing = torch.jit.is_tracing()
    if tracing and not _fast_trace() or torch.compiler.is_compiling() or not (tracing or _finite(q, k, v)):
        return _attention_steps(q, k, v, scale, causal)
    return F.scaled_dot_product_attention(q, k, v, scale=scale, is_causal=causal)


def _finite(*tensors):
    """Whether the tensors hold neither NaN nor infinities: whether the float32 sum of their sums
    is finite (a sum of finite values may overflow, which says False: the exact route then too)."""
    return bool(torch.isfinite(sum(t.sum(dtype=torch.float32) for t in tensors)))


def _attention_steps(q, k, v, scale, causal):
    """The reference's attention: the scaled scores, each key after its query -inf, softmax, @ v."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if causal:
        later = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1)
        scores = torch.where(later, float("-inf"), scores)
    return torch.matmul(torch.softmax(scores, -1), v)
'''

_INPUT_BOUND = '''
def input_bound(model, tensors):
    """The largest of INPUT_BOUNDS such that no value forward computes can be NaN or overflow
    float32 while every input's elements lie within it (None: none such, or an op `_Bound` does
    not cover): forward run once on bounds per candidate (interval arithmetic about 0, in float64,
    on the model's weights as they are). Within it, NaN reaches no relu, max pool or exp, so the
    fuser's own forms compute what the reference does (`call`)."""
    for bound in INPUT_BOUNDS:
        try:
            with torch.no_grad():
                model(*[torch.full(t.shape, bound, dtype=torch.float64).as_subclass(_Bound) for t in tensors])
        except _Unbounded:
            continue
        except Exception as error:  # noqa: BLE001  a rule called otherwise than it takes: no bound, said
            print(f"shipei: torch: {type(model).__name__} has no input bound, its graph keeps NaN's forms: {error}"
                  .splitlines()[0], file=sys.stderr)
            return None
        return bound
    return None


INPUT_BOUNDS = (2.0 ** 60, 2.0 ** 30, 2.0 ** 15, 2.0 ** 7, 1.0)  # tried largest first
REACH = torch.finfo(torch.float32).max / 2 ** 24  # what no bound may pass: room for kernels whose steps grow (Winograd)


class _Unbounded(Exception):
    """forward called an op `_Bound` has no rule for, or a bound passed REACH."""


class _Bound(torch.Tensor):
    """Upper bounds on the magnitudes of a value's elements, float64, that forward computes on in
    place of the value: each op by its rule in _BOUND_RULES (a product's is the product of the
    operands' magnitudes, a relu's its operand's, a softmax's 1), ops that only move elements as
    they are; any other op raises _Unbounded, as does a bound past REACH or NaN."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name.startswith("__") and name.endswith("__"):
            name = name[2:-2]
            inplace = name in ("iadd", "isub", "imul", "itruediv")
            name = name[1:] if inplace else name
        else:
            inplace = name.endswith("_")
            name = name.rstrip("_")
        kwargs = kwargs or {}
        rule = _BOUND_RULES.get(name)
        if name not in _MOVES and (rule is None or "out" in kwargs or inplace and not isinstance(args[0], _Bound)
                                   or name in _FUNCTIONAL and func is not getattr(F, name)):
            raise _Unbounded(name)  # uncovered; or a result written elsewhere; or torch's argument order
        with torch._C.DisableTorchFunctionSubclass():
            if name in _MOVES:
                return _moved(func(*args, **kwargs), name)
            result = _check(rule(*args, **kwargs), name)
            return (args[0].copy_(result) if inplace else result).as_subclass(_Bound)


def _moved(result, name):
    """The result of an op that moves elements or says what a tensor is, computed on bounds: its
    tensors bounds (isfinite's and isnan's masks as they are). A cast of bounds to another dtype
    would make them values no rule reads as bounds: it leaves the model unbounded."""
    results = result if isinstance(result, (tuple, list)) else (result,)
    masks = name in ("isfinite", "isnan")
    if any(isinstance(r, torch.Tensor) and r.dtype != (torch.bool if masks else torch.float64) for r in results):
        raise _Unbounded(name)
    bounds = [r.as_subclass(_Bound) if isinstance(r, torch.Tensor) and not masks else r for r in results]
    return type(result)(bounds) if isinstance(result, (tuple, list)) else bounds[0]


def _abs(x):
    """A tensor's magnitudes in float64 (a bound's are itself), a number's; other arguments as they are."""
    if isinstance(x, torch.Tensor):
        return x.abs().double() if x.is_floating_point() else x
    return abs(x) if isinstance(x, float) else x


def _on_magnitudes(op):
    """The op itself on magnitudes, for ops where |op(x)| <= op(|x|): products, sums, pools, exp."""
    return lambda *args, **kwargs: op(*[_abs(a) for a in args], **{k: _abs(v) for k, v in kwargs.items()})


def _operand(x, *args, **kwargs):
    """|f(x)| <= |x|: relu, gelu, silu, abs, negation."""
    return _abs(x)


def _unit(x, *args, **kwargs):
    """|f(x)| <= 1: sigmoid, tanh, softmax."""
    return torch.ones_like(x, dtype=torch.float64)


def _sum(a, b, alpha=1):
    """a + alpha b, a - alpha b, and reversed (rsub's alpha scales its first operand)."""
    return (_abs(a) + _abs(b)) * max(1.0, abs(alpha))


def _product(a, b):
    return _abs(a) * _abs(b)


def _quotient(a, b):
    """By a weight or a number: where it holds a 0 the bound is inf, past REACH; by a bound, unbounded."""
    if isinstance(b, _Bound):
        raise _Unbounded("div")
    return _abs(a) / _abs(b)


def _pad(x, pad, mode="constant", value=None):
    """Constant padding: its value's magnitude. -inf (a max pool's) is left out: arithmetic on it is inf."""
    value = 0.0 if value is None else float(value)
    if mode != "constant" or not abs(value) < float("inf"):
        raise _Unbounded("pad")
    return F.pad(x, pad, value=abs(value))


def _log_softmax(x, dim, *args, **kwargs):
    """|x - max - log(sum exp(x - max))| <= 2 max|x| + log(n) along the row."""
    return (2 * _abs(x).amax(dim, keepdim=True) + torch.tensor(float(x.shape[dim])).log()).expand_as(x).contiguous()


def _layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
    """A normalised element's magnitude is below sqrt(n), then the affine weight's and bias's; its
    variance, a mean of squares, must not overflow, nor eps be 0 (a constant row: 0 / 0)."""
    n = torch.Size(shape).numel()
    if not (eps > 0 and bool(_abs(x).amax() ** 2 * n <= REACH)):
        raise _Unbounded("layer_norm")
    out = torch.full_like(x, n ** 0.5)
    out = out if weight is None else out * _abs(weight)
    return out if bias is None else out + _abs(bias)


def _batch_norm(x, mean, var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Inference's (x - mean) / sqrt(var + eps) * weight + bias, per channel (dimension 1)."""
    scale = (1.0 if weight is None else _abs(weight)) / torch.sqrt(var.double() + eps)
    if training or not bool(torch.isfinite(scale).all()):
        raise _Unbounded("batch_norm")
    shape = (1, -1) + (1,) * (x.dim() - 2)
    out = (_abs(x) + _abs(mean).view(shape)) * scale.view(shape)
    return out if bias is None else out + _abs(bias).view(shape)


def _attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    """Each output row is a convex combination of v's rows; the scores must stay below REACH."""
    if attn_mask is not None:
        raise _Unbounded("scaled_dot_product_attention")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not bool((torch.matmul(_abs(q), _abs(k).transpose(-1, -2)) * abs(scale)).amax() <= REACH):
        raise _Unbounded("scaled_dot_product_attention")
    return _abs(v).amax(-2, keepdim=True).expand(*q.shape[:-1], v.shape[-1]).contiguous()


def _mean(x, *args, **kwargs):
    """The mean of magnitudes, whose sum must not overflow either."""
    _check(torch.sum(x, *args, **kwargs), "mean")
    return torch.mean(x, *args, **kwargs)


def _avg_pool2d(x, kernel, *args, **kwargs):
    """The mean of each window's magnitudes, whose sum (kernel elements times it) must not overflow."""
    out = F.avg_pool2d(x, kernel, *args, **kwargs)
    _check(out * torch.Size(kernel if isinstance(kernel, (tuple, list)) else (kernel, kernel)).numel(), "avg_pool2d")
    return out


def _check(bound, name):
    """Raise _Unbounded where a bound passes REACH or is NaN."""
    if bound.numel() and not bool(bound.abs().amax() <= REACH):
        raise _Unbounded(name)
    return bound


def _power(x, exponent):
    """x ** p for a whole p >= 0 (the program writes 2.0): of a negative x and another p, NaN."""
    if not (isinstance(exponent, (int, float)) and exponent >= 0 and float(exponent).is_integer()):
        raise _Unbounded("pow")
    return _abs(x) ** exponent


_BOUND_RULES = {
    **{name: _on_magnitudes(getattr(F, name, None) or getattr(torch, name)) for name in (
        "conv2d", "matmul", "mm", "bmm", "max_pool2d",
        "amax", "maximum", "sum", "exp")},
    "mean": _on_magnitudes(_mean), "avg_pool2d": _on_magnitudes(_avg_pool2d),
    "linear": _on_magnitudes(F.linear), "amin": _on_magnitudes(torch.amax), "minimum": _on_magnitudes(torch.maximum),
    **dict.fromkeys(("relu", "gelu", "silu", "abs", "neg"), _operand),
    **dict.fromkeys(("sigmoid", "tanh", "softmax"), _unit),
    **dict.fromkeys(("add", "sub", "radd", "rsub"), _sum), **dict.fromkeys(("mul", "rmul"), _product),
    **dict.fromkeys(("div", "truediv"), _quotient), "pad": _pad, "log_softmax": _log_softmax,
    "layer_norm": _layer_norm, "batch_norm": _batch_norm, "pow": _power,
    "scaled_dot_product_attention": _attention,
}
#: Ops that move or copy elements, or say what a tensor is: computed on bounds as they are.
_MOVES = frozenset({
    "reshape", "view", "flatten", "permute", "transpose", "t", "contiguous", "movedim", "unsqueeze", "squeeze",
    "expand", "expand_as", "getitem", "cat", "concat", "stack", "split", "chunk", "unbind", "narrow", "clone",
    "to", "get", "size", "dim", "stride", "is_contiguous", "numel", "len", "isfinite", "isnan", "detach",
})
#: Rules written for torch.nn.functional's argument order, which torch's own function of the name
#: does not share.
_FUNCTIONAL = frozenset({"batch_norm", "layer_norm"})
'''

_RELU = '''
def relu_keeping_nan(x, inplace=False):
    """torch.relu (relu_ where `inplace`), in a form oneDNN Graph computes as torch does: while
    tracing, clamp_min, which the fuser leaves to torch; it computes relu, in place or not, as
    max(x, 0), which maps NaN to 0. Not clamp_min always: its gradient at 0 is 1, relu's 0. The
    fast graph's is relu (`_onednn_graph`)."""
    if torch.jit.is_tracing() and not _fast_trace():
        return x.clamp_min_(0) if inplace else torch.clamp_min(x, 0)
    return torch.relu_(x) if inplace else torch.relu(x)
'''

_EXP = '''
def exp_keeping_nan(x, inplace=False):
    """torch.exp (exp_ where `inplace`), in a form oneDNN Graph computes as torch does: while
    tracing, with NaN put back after it, out of place even where `inplace` (the fuser computes exp,
    in place or not, with NaN mapped to inf). The fast graph's is exp (`_onednn_graph`)."""
    if torch.jit.is_tracing() and not _fast_trace():
        return torch.where(torch.isnan(x), x, torch.exp(x))
    return x.exp_() if inplace else torch.exp(x)
'''

#: What the oneDNN graph's program calls for the ops whose oneDNN kernels treat NaN otherwise than
#: torch's (the max pool is `max_pool2d`'s), out of place and in place.
_KEEPING_NAN = {"relu": ("relu_keeping_nan({0})", "relu_keeping_nan({0}, inplace=True)"),
                "exp": ("exp_keeping_nan({0})", "exp_keeping_nan({0}, inplace=True)")}

_PLAIN = '''
def _plain():
    """Whether the kernel choices below take torch's plain route: where autograd records (they have
    no derivative, or overwrite what it keeps), or where TorchScript traces (the oneDNN graph fuses
    torch's own ops, not oneDNN's calls, transposed products or in-place writes)."""
    return torch.is_grad_enabled() or torch.jit.is_tracing()
'''

#: The helpers that run ops on oneDNN's kernels, each after those it reads at import.
_ONEDNN_HELPERS = (_PACKED, _GEMM_PACKS, _PACKED_LINEAR, _FUSED_LINEAR, _FUSED_CONV2D, _POST_OPS_CODE)

#: The forms of ops that oneDNN Graph would compute otherwise than torch on NaN (`_KEEPING_NAN`).
_GRAPH_FORMS = (_RELU, _EXP)

#: The helpers that choose among torch's own CPU kernels.
_KERNEL_HELPERS = (_ATTENTION, _MAX_POOL2D, _NARROW_LINEAR, _NARROW_HEAD, _TRANSPOSED_PRODUCT, _SOFTMAX, _LOG_SOFTMAX,
                   _ALONG_FIRST)

#: Every helper a program may call, the shared predicate first.
_HELPERS = (_PLAIN, *_ONEDNN_HELPERS, *_GRAPH_FORMS, *_KERNEL_HELPERS)

#: In-place spellings: the result overwrites operand 0 (see codegen/buffers.py).
INPLACE = {
    **{name: f"{{0}}.{name}_()" for name in _UNARY},
    "rsqrt": _rsqrt("{0}.rsqrt_()"),
    "relu": "torch.relu_({0})",
    "silu": "F.silu({0}, inplace=True)",
    "gelu": "torch.ops.aten.gelu_({0}, approximate={approximate})",
    "add": "{0}.add_({1})", "sub": "{0}.sub_({1})", "mul": "{0}.mul_({1})", "div": "{0}.div_({1})",
    "maximum": "torch.maximum({0}, {1}, out={0})", "minimum": "torch.minimum({0}, {1}, out={0})",
}

#: Spellings that write the result into `{out}`, a kept buffer (see codegen/buffers.py). Only
#: `out=` kernels that allocate nothing: torch's autogenerated ones (layer_norm's, convolution's)
#: compute into a new tensor and copy it over. linear's adds the bias after the product for inputs
#: of rank > 2 (F.linear adds it inside the GEMM: 1 ulp apart at most). Binary arithmetic is left
#: out, as a Python scalar may come first.
INTO = {
    **{name: f"torch.{name}({{0}}, out={{out}})" for name in _UNARY},
    "gelu": "torch.ops.aten.gelu.out({0}, approximate={approximate}, out={out})",
    "where": "torch.where({0}, {1}, {2}, out={out})",
    "matmul": "torch.matmul({0}, {1}, out={out})",
    "linear": _where(_narrow_weight, "narrow_linear({args}, out={out})",
                     "torch.ops.aten.linear.out({args}, out={out})"),
    "softmax": _where(_narrow_rows, "softmax({0}, {axis}, out={out})", "torch.softmax({0}, {axis}, out={out})"),
    "log_softmax": _where(_narrow_rows, "log_softmax({0}, {axis}, out={out})",
                          "torch.log_softmax({0}, {axis}, out={out})"),
    "concat": "torch.cat([{args}], dim={axis}, out={out})",
    "gather": _gather_into,
}

#: Ops whose torch spelling always returns a new tensor. The rest may return a view of their
#: operand (reshape, permute, split, slice, expand; gather, as `w[i]` with a 0-d index is a
#: view) or the operand itself (eval-mode dropout, `.to` of its own dtype).
FRESH = frozenset({
    *_UNARY, "rsqrt", "relu", "silu", "gelu", "logical_not", "add", "sub", "mul", "div", "pow", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "where", "matmul", "linear", "attention",
    "conv2d", "max_pool2d", "avg_pool2d", "reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "softmax",
    "log_softmax", "layer_norm", "batch_norm", "concat", "iota",
})

#: The generation options, written at the top of the module so that it describes itself.
_OPTIONS = """# Generation options; regenerate to change them.
AMP_DTYPE = {amp}  # autocast dtype of forward (None: off)
TF32 = {tf32}  # float32 matmul/conv may use TF32 on NVIDIA GPUs
COMPILE = {compile}  # {compiles}
CHANNELS_LAST = {channels_last}  # NHWC memory format for weights and 4-D inputs
CPU_ARENA = {cpu_arena}  # on CPU, freed memory stays in the process for the next call (see keep_freed_memory)
ONEDNN_GRAPH = {onednn_graph}  # on CPU, call() runs the model traced and fused by oneDNN Graph (see _onednn_graph)
GUARDED_GRAPH = {guarded_graph}  # and its fused forms for inputs within a bound proven from the weights (input_bound)
"""


TARGET = Target(
    name="torch", framework="torch", extra="torch",
    std_imports=("import ctypes", "import sys", "import threading", "import warnings", "import weakref"),
    imports=("import torch", "import torch.nn.functional as F"),
    runtime_code=_RUNTIME,
    dtypes=_DTYPES,
    rules=RULES,
    free_dead_values=True,
    inplace=INPLACE,
    fresh=FRESH,
    into=INTO,
    into_dtypes=frozenset({DType.f32, DType.f64}),
    kept_buffer="self._kept.get({slot}, {shape}, {like})",  # KEPT
    model_locals=frozenset({"self", "device"}),
    helpers=(_OPTIONS, *_HELPERS),
    autocast={DType.bf16: {"amp": "bf16"}, DType.f16: {"amp": "fp16"}},
    # train_step writes params through views of one flat vector, which their version counters do
    # not see: a packed copy would go stale
    training_options={"pack_linear": False, "fuse_post_ops": False},
    fused_values=fused_values,
    kernel_scratch=kernel_scratch,
    workspace={"attention": _flash_attention_workspace},
)

#: The attribute where the generated model keeps its buffers (see `KeptBuffers`).
KEPT = "_kept"


@functools.cache
def module_attributes() -> frozenset[str]:
    """The names a `torch.nn.Module` or `ModuleList` instance defines, asked of torch itself, and the
    generated model's own. A layer or param of one of these names would shadow it, or, like
    `__class__`, rebind torch's own class; torch refuses them in state_dicts too."""
    torch = require_framework("torch")
    return frozenset(dir(torch.nn.Module())) | frozenset(dir(torch.nn.ModuleList())) | {KEPT}


def _torch_path(value: Value) -> list[str]:
    """A param's path, refusing names that torch's containers already define, where the user
    declared the param or its layer."""
    parts = param_path(value)
    for part in parts:
        if part in module_attributes():
            raise ShipeiError(f"'{part}' (in parameter '{value.name}') cannot name a layer or parameter on the "
                              "torch target: torch.nn.Module defines it", value.param.loc,
                              hint="rename it; the jax, tf and mindspore targets take any name")
    return parts


def _attr(obj: str, part: str) -> str:
    if part.isdigit():
        return f"{obj}[{part}]"
    return f"getattr({obj}, {part!r})" if keyword.iskeyword(part) else f"{obj}.{part}"


def _module_tree(code: Code, params: list[Value]) -> None:
    """Declare params in order, creating each container on first use, so that parameter
    `a.0.b.w` lives at self.a[0].b.w and a reader sees each layer's params together."""
    numbered: dict[tuple[str, ...], int] = {}
    for p in params:
        parts = _torch_path(p)
        for i in range(1, len(parts) - 1):
            if parts[i].isdigit():
                key = tuple(parts[:i])
                numbered[key] = max(numbered.get(key, 0), int(parts[i]) + 1)
    made: set[tuple[str, ...]] = set()
    for p in params:
        *holder, leaf = _torch_path(p)
        for i in range(1, len(holder) + 1):
            prefix = tuple(holder[:i])
            if prefix in made or prefix[-1].isdigit():
                continue
            made.add(prefix)
            value = (f"torch.nn.ModuleList(torch.nn.Module() for _ in range({numbered[prefix]}))"
                     if prefix in numbered else "torch.nn.Module()")
            code(_assign(prefix, value))
        empty = f"torch.empty({_dims(p.shape)}, dtype={TARGET.dtypes[p.dtype]})"
        if p.param.buffer:
            code(f"{_path_expr(holder)}.register_buffer({leaf!r}, {empty})")
        else:
            code(_assign([*holder, leaf], f"torch.nn.Parameter({empty})"))


def _assign(parts: tuple[str, ...] | list[str], value: str) -> str:
    """`self.a.b = value`, or setattr where the last name is a Python keyword."""
    *holder, leaf = parts
    if keyword.iskeyword(leaf):
        return f"setattr({_path_expr(holder)}, {leaf!r}, {value})"
    return f"{_path_expr(parts)} = {value}"


def _dims(shape) -> str:
    return f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


def _path_expr(parts: tuple[str, ...] | list[str], root: str = "self") -> str:
    expr = root
    for part in parts:
        expr = _attr(expr, part)
    return expr


AMP_DTYPES = {"bf16": DType.bf16, "fp16": DType.f16}


#: The ops oneDNN Graph builds its partitions around: a graph of none gains nothing from the trace.
_ONEDNN_GRAPH_OPS = frozenset({"conv2d", "linear", "matmul"})

def _guarded_graph(graph: Graph) -> bool:
    """Whether the oneDNN graph of `graph` gets a fast twin behind an input bound (`input_bound`):
    where it convolves, as the NaN-keeping forms cost most there (the example cnn 1.07x, the
    mlp's relus 1.01x, below the bound check's 9 us); its inputs all float, so that a bound on
    them bounds every value; its float values all float32, the range the bounds are checked in."""
    values = [*graph.inputs, *graph.params, *(r for node in graph.nodes for r in node.results)]
    return (any(node.op == "conv2d" for node in graph.nodes) and all(v.dtype.is_float for v in graph.inputs)
            and all(v.dtype is DType.f32 for v in values if v.dtype.is_float))


#: The ops whose kernels want the channels-last memory format.
_SPATIAL = frozenset({"conv2d", "max_pool2d", "avg_pool2d"})


@dataclass(frozen=True)
class Options:
    """What `emit` accepts besides the graph; validated so a typo fails at compile time."""

    amp: str | None = None
    tf32: bool = False
    compile: bool | Literal["groups"] = False
    channels_last: bool | None = None
    reuse_buffers: bool = False
    keep_buffers: bool = False
    cpu_arena: bool = True
    pack_linear: bool = True
    fuse_post_ops: bool = True
    onednn_graph: bool = True

    def __post_init__(self) -> None:
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ShipeiError(f"torch: amp must be None or one of {', '.join(AMP_DTYPES)}, got {self.amp!r}")
        if not (isinstance(self.compile, bool) or self.compile == "groups"):
            raise ShipeiError(f"torch: compile must be False, True or 'groups', got {self.compile!r}")
        for name in ("tf32", "channels_last", "reuse_buffers", "keep_buffers", "cpu_arena", "pack_linear",
                     "fuse_post_ops", "onednn_graph"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "channels_last" and value is None):
                raise ShipeiError(f"torch: {name} must be True or False, got {value!r}")


def emit(graph: Graph, source: str, *, amp: str | None = None, tf32: bool = False,
         compile: bool | Literal["groups"] = False, channels_last: bool | None = None,
         reuse_buffers: bool = False, keep_buffers: bool = False, cpu_arena: bool = True,
         pack_linear: bool = True, fuse_post_ops: bool = True, onednn_graph: bool = True) -> GeneratedModule:
    """The standalone PyTorch program for `graph`; see the module docstring for the options."""
    options = Options(amp, tf32, compile, channels_last, reuse_buffers, keep_buffers, cpu_arena, pack_linear,
                      fuse_post_ops, onednn_graph)
    if channels_last is None:
        options = replace(options, channels_last=any(node.op in _SPATIAL for node in graph.nodes))
    if compile == "groups" and not graph.groups():
        raise ShipeiError("torch: compile='groups' compiles the fused groups, and this graph has none",
                          hint="fusion runs at -O3 (or with --passes ...,fuse) and may find nothing to "
                               "group; compile=True compiles the whole model")
    return write_module(TARGET, graph, source, functools.partial(write_model, options=options))


def write_model(code: Code, graph: Graph, module: ModuleNames, emit_body, options: Options,
                target: Target = TARGET) -> None:
    """The model's class (and its hoisted groups) for `target`: torch's, or one built from its parts."""
    names = module.names
    constants: dict[Node, str] = {}
    amp = AMP_DTYPES.get(options.amp)
    own_kernels = amp is None and not options.compile  # no autocast or compiler choosing kernels instead
    onednn_graph = options.onednn_graph and own_kernels and any(node.op in _ONEDNN_GRAPH_OPS for node in graph.nodes)
    guarded = onednn_graph and _guarded_graph(graph)
    if options.pack_linear and own_kernels and "linear" in target.rules:
        rules = {**target.rules, "linear": _where(_packed_weight, "packed_linear({args})", target.rules["linear"])}
        into = dict(target.into)
        if "linear" in into:
            into["linear"] = _where(_packed_weight, "packed_linear({args}, out={out})", into["linear"])
        target = replace(target, rules=rules, into=into)
    if onednn_graph:  # what the fuser reads from the traced forward must keep NaN as torch does
        target = replace(target, rules={**target.rules, **{op: f for op, (f, _) in _KEEPING_NAN.items()}},
                         inplace={**target.inplace, **{op: f for op, (_, f) in _KEEPING_NAN.items()}})
    compiles = ("each fused group is torch.compile'd" if options.compile == "groups"
                else "True: load() wraps the model in torch.compile; 'groups': each fused group")
    code(*_OPTIONS.format(amp=target.dtypes[amp] if amp else None, tf32=options.tf32, compile=repr(options.compile),
                          compiles=compiles, channels_last=options.channels_last,
                          cpu_arena=options.cpu_arena,
                          onednn_graph=onednn_graph, guarded_graph=guarded).splitlines(),
         "", "")

    def constant_ref(node: Node) -> str:
        return f"self.{constants[node]}"

    e = Emit(target, graph, names, lambda v: _path_expr(_torch_path(v)), constant_ref)
    model = Code()
    # Fused groups are functions at module level, before the class (which `model` holds meanwhile),
    # not defined anew by every call of forward; under compile=groups each is compiled.
    e.hoist = (code, "@torch.compile" if options.compile == "groups" else None)
    e.layer_ref = LayerRef(lambda path: _path_expr(path.split(".")),
                           lambda layer, v, path: _path_expr(_torch_path(v)[path.count(".") + 1:], layer))
    if options.fuse_post_ops and own_kernels:
        e.epilogue = functools.partial(_fused_kernel, users=graph.users(), outputs=frozenset(graph.outputs),
                                       linear=options.pack_linear)
    e.plan(reuse_buffers=options.reuse_buffers and amp is None,
           keep_buffers=options.keep_buffers and own_kernels and not onednn_graph)
    _write_class(model, graph, module.model, e, emit_body, amp, constants)
    code(*model.lines)
    for helper in called_helpers(_HELPERS, code):
        code("", *helper.splitlines())
    if guarded:
        code("", *_INPUT_BOUND.splitlines())


def _write_class(code: Code, graph: Graph, name: str, e: Emit, emit_body, amp: DType | None,
                 constants: dict[Node, str]) -> None:
    # Constants are buffers beside the user's layers and params, named clear of them.
    attrs = python_namespace(module_attributes() | {p.name.split(".")[0] for p in graph.params})
    with code.block(f"class {name}(torch.nn.Module):"):
        with code.block("def __init__(self):"):
            code("super().__init__()")
            _module_tree(code, graph.params)
            constants.update(hoisted_constants(graph, attrs, "const"))
            for node, name in constants.items():
                value = e.literal("constant", "value", node.attrs["value"])
                code(f"self.register_buffer({name!r}, torch.tensor({value}, "
                     f"dtype={e.dtype(node.attrs['dtype'])}), persistent=False)")
            if e.buffers.slots:
                code(f"self.{KEPT} = KeptBuffers()",
                     "self.requires_grad_(False)  # for inference: forward writes into kept buffers (out=)")
        code("")
        inputs = [e.names.fresh(v.name) for v in graph.inputs]
        for v, n in zip(graph.inputs, inputs):
            e.values[v] = n
        with code.block(f"def forward(self, {', '.join(inputs)}):"):
            if any(n.op == "iota" for n in graph.nodes):
                code(f"device = {inputs[0]}.device" if inputs else "device = torch.device('cpu')")
            e.bind_symbols(code, inputs)
            if amp is None:
                emit_body(e, code)
                code(f"return {', '.join(e.values[v] for v in graph.outputs)}")
                return
            with code.block(f"with torch.autocast({inputs[0] if inputs else 'device'}.device.type, dtype=AMP_DTYPE):"):
                emit_body(e, code)
            # Autocast leaves float outputs in AMP_DTYPE; hand them back at their declared dtype.
            code("return " + ", ".join(f"{e.values[v]}.to({e.dtype(v.dtype)})" if v.dtype.is_float else e.values[v]
                                       for v in graph.outputs))
