"""MindSpore target: an `nn.Cell` whose `construct` is compiled by `ms.jit`, for Ascend first.

Parameters are `ms.Parameter`s named with the DSL's dotted names, so `ms.load_param_into_net`
and checkpoints match them by name. Lowerings use `mindspore.ops`, whose kernels exist on CPU,
GPU and Ascend alike (most `mint` ops have no CPU kernel in MindSpore 2.10).

`@ms.jit` on `construct` rather than `set_context(mode=GRAPH_MODE)`: both compile the same graph
and give the same results, but jit compiled small models 1.3-2.3x faster on a 2-core CPU (0.06 s
against 0.15 s for a 3-op cell) and leaves the process-wide mode of other MindSpore code alone.
GRAPH_MODE calls cost ~0.5-1 ms less each, which matters only for tiny models; a user may still
set it, and the module works under it.

A graph with fused groups (-O3) compiles at `jit_level='O1'`, MindSpore's level for graph-kernel
fusion. Its clusters are MindSpore's own, not shipei's groups: a group is a local function, which
MindSpore inlines. Ascend and GPU build the clusters' kernels; on CPU, MindSpore 2.10 without the
AKG compiler only expands composite ops, measured at the same results and speed as O0.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np

from ..ir.errors import ShipeiError
from ..ir.graph import Graph, Node, Value
from ..ir.types import DType
from .frameworks import require_framework
from .module import GeneratedModule, ModuleNames, write_module
from .writer import (
    Code,
    Emit,
    Rule,
    Target,
    attention,
    called_helpers,
    computed_in,
    hoisted_constants,
    nan_kept,
    pads_last_dim_first,
    pair,
    param_path,
    python_namespace,
)

MixedPrecision = Literal["fp16", "bf16"]


def _reduce(fn: str, keep: str):
    def rule(e: Emit, node: Node) -> str:
        axes = node.attrs["axes"]
        if axes is None:
            axes = tuple(range(node.operands[0].type.rank))
        dtype = node.results[0].dtype
        # ops.sum widens int32 to int64 as torch.sum does; the IR keeps the operand's dtype.
        widened = f", dtype={e.dtype(dtype)}" if fn == "sum" and dtype.is_int else ""
        return f"ops.{fn}({e.arg(node, 0)}, {tuple(axes)!r}, {keep}={node.attrs['keepdims']!r}{widened})"

    return rule


def _extremum(fn: str):
    """ops.amax or ops.amin, which skip NaN where numpy's max keeps it: a float result is NaN where
    the elements it reduces hold one (`_keeping_nan`)."""
    return nan_kept(_reduce(fn, "keepdims"), "_keeping_nan({reduced}, {x}, {axes}, {keepdims})")


def _nan_first(template: str) -> Rule:
    """MindSpore's maximum and minimum drop a NaN in their first operand; numpy keeps it."""

    def rule(e: Emit, node: Node) -> str:
        expr = e.format(template, node)
        if not node.operands[0].dtype.is_float:
            return expr
        x = e.arg(node, 0)
        return f"ops.where(ops.isnan({x}), {x}, {expr})"

    return rule


def _relu(e: Emit, node: Node) -> str:
    """maximum(0, x): the kernel returns its second operand unless the first is greater, so a NaN
    in x comes through, in one kernel (ops.relu maps NaN to 0, mindspore-ai/mindspore#380; keeping
    NaN with a select cost the example MLP 5% against a hand-written nn.ReLU)."""
    zero = "0.0" if node.result.dtype.is_float else "0"
    return f"ops.maximum({zero}, {e.arg(node, 0)})"


def _differentiated_relu(e: Emit, node: Node) -> str:
    """relu in a program autodiff differentiates: ops.relu, with NaN kept (as `_relu` keeps it) by a
    select on a mask autodiff does not enter. `maximum(0, x)`'s gradient also reduces one for the
    broadcast 0 over the whole tensor: the digits CNN's gradient took 40-47 ms with it, 19 ms so
    (the forward's two more kernels cost inference: 4% on the example MLP)."""
    x = e.arg(node, 0)
    if not node.result.dtype.is_float:
        return _relu(e, node)
    return f"ops.where(ops.stop_gradient(ops.isnan({x})), {x}, ops.relu({x}))"


def _tanh(e: Emit, node: Node) -> str:
    x = e.arg(node, 0)
    if node.results[0].dtype is DType.f32:
        # MindSpore's float32 CPU tanh is up to 1e-4 off (0.9 of the f32 tolerance) and passes 1
        # near |x| = 5; through sigmoid it stays within 1e-6.
        return f"2 * ops.sigmoid(2 * {x}) - 1"
    return f"ops.tanh({x})"


def _slice(e: Emit, node: Node) -> str:
    x = node.operands[0]
    index = [":"] * x.type.rank
    for axis, start, stop, step in zip(*(node.attrs[k] for k in ("axes", "starts", "stops", "steps")), strict=True):
        # Dims of sliced axes are static (the type rule says so): resolve negative starts and the
        # 2**62 "to the end" stop here, so the generated code shows plain bounds.
        start, stop, step = slice(start, stop, step).indices(x.shape[axis])
        index[axis] = f"{start}:{stop}" + (f":{step}" if step != 1 else "")
    return f"{e.arg(node, 0)}[{', '.join(index)}]"


def _pad(e: Emit, node: Node) -> str:
    pads = pads_last_dim_first(node.attrs["pads"])
    return f"ops.pad({e.arg(node, 0)}, {pads!r}, value={_fill(e, node.results[0].dtype, node.attrs['value'])})"


def _fill(e: Emit, dtype: DType, value: float) -> str:
    """The pad value as numpy.pad stores it into an array of `dtype` (ints truncate, bool tests != 0)."""
    if dtype.is_float:
        return e.float(dtype, value)
    with np.errstate(invalid="ignore"):
        return repr(np.asarray(value).astype(dtype.numpy).item())


def _layer_norm(e: Emit, node: Node) -> str:
    x, w, b = e.args(node)
    rank = node.operands[0].type.rank
    begin = rank - node.operands[1].type.rank
    if node.result.dtype is DType.f64:  # the LayerNorm kernel has no float64: written out as the reference
        return f"_layer_norm({x}, {w}, {b}, {tuple(range(begin, rank))!r}, {e.float(DType.f64, node.attrs['eps'])})"
    # The LayerNorm primitive is one kernel; ops.layer_norm has no CPU kernel.
    return (f"ops.LayerNorm(begin_norm_axis={begin}, begin_params_axis={begin}, "
            f"epsilon={node.attrs['eps']!r})({x}, {w}, {b})[0]")


def _attention(e: Emit, node: Node) -> str:
    # q @ k^T with the transpose folded into the kernel rather than copied (1.11x -> 1.05x the
    # hand-written example transformer's time). The fill is a tensor for float64: a Python float
    # would make masked_fill compute float64 scores in float32.
    matmul = "ops.BatchMatMul" if node.operands[0].type.rank > 2 else "ops.MatMul"
    return attention(e, node, matmul + "(transpose_b=True)({q}, {k}) * {scale}",
                     "ops.masked_fill({scores}, ops.arange({source}) > ops.reshape(ops.arange({length}), "
                     "({length}, 1)), {fill})",
                     "ops.matmul(ops.softmax({scores}, -1), {v})")


def _matmul(e: Emit, node: Node) -> str:
    """ops.matmul where its gradient is right. A batched matmul's is not in three cases, all found
    by the random-graph gradient test: an inner dim of 1 ("shape1[-1] must be equal to
    shape2[-2]"), a second operand of rank 2 (a wrong gradient for it) and batch dims that
    broadcast (a Reshape error). So an outer product is a broadcast multiply (the same products,
    one each), [..., M, K] @ [K, N] is one 2-D matmul over the rows (as a tensordot), and other
    broadcast batches are broadcast first; the gradients then go through multiply, reshape and
    broadcast_to, which MindSpore gets right."""
    a, b = node.operands
    x, y = e.args(node)
    if a.type.rank < 2 or b.type.rank < 2 or max(a.type.rank, b.type.rank) < 3:
        return f"ops.matmul({x}, {y})"
    if a.shape[-1] == 1:
        return f"{x} * {y}"
    if b.type.rank == 2:
        rows = f"ops.reshape({x}, (-1, {e.dim(a.shape[-1])}))"
        return f"ops.reshape(ops.matmul({rows}, {y}), {e.dims(node.result.shape)})"
    batch = node.result.shape[:-2]
    if a.shape[:-2] != batch:
        x = f"ops.broadcast_to({x}, {e.dims((*batch, *a.shape[-2:]))})"
    if b.shape[:-2] != batch:
        y = f"ops.broadcast_to({y}, {e.dims((*batch, *b.shape[-2:]))})"
    return f"ops.matmul({x}, {y})"


def _linear(e: Emit, node: Node) -> str:
    """x @ w^T (+ b) as nn.Dense computes it: MatMul with the transpose folded in, BiasAdd, on
    rows (a 3-D or higher `x` flattened to [rows, in], the result reshaped back). ops.dense on
    [B, T, in] took the example transformer 16.4 ms against 14.3 ms this way."""
    x, w, *bias = e.args(node)
    if node.operands[0].type.rank > 2:
        x = f"ops.reshape({x}, (-1, {e.dim(node.operands[0].shape[-1])}))"
    y = f"ops.MatMul(transpose_b=True)({x}, {w})"
    if bias:
        y = f"ops.BiasAdd()({y}, {bias[0]})"
    if node.operands[0].type.rank > 2:
        y = f"ops.reshape({y}, ({', '.join(e.dim(d) for d in node.result.shape)}))"
    return y


def _batch_norm(e: Emit, node: Node) -> str:
    x, mean, var, weight, bias = e.args(node)
    if node.result.dtype is DType.f32 and 2 <= node.operands[0].type.rank <= 4 and 0 < node.attrs["eps"] <= 1:
        # The BatchNorm primitive, as nn.BatchNorm2d runs it: one kernel (the example CNN: 257 ->
        # 237 ms against four elementwise passes); it takes float16/32 of rank 2-4 and eps in (0, 1].
        primitive = f"ops.BatchNorm(is_training=False, epsilon={node.attrs['eps']!r})"
        return f"{primitive}({x}, {weight}, {bias}, {mean}, {var})[0]"
    shape = (1, -1) + (1,) * (node.operands[0].type.rank - 2)
    return f"_batch_norm({', '.join(e.args(node))}, {shape!r}, {e.float(node.result.dtype, node.attrs['eps'])})"


def _conv2d(e: Emit, node: Node) -> str:
    x, w, *bias = e.args(node)
    b = bias[0] if bias else None
    return (f"ops.conv2d({x}, {w}, {b}, {pair(node.attrs['stride'])}, 'pad', {pair(node.attrs['padding'])}, "
            f"{pair(node.attrs['dilation'])}, {node.attrs['groups']})")


def _max_pool2d(e: Emit, node: Node) -> str:
    window = ", ".join(str(pair(node.attrs[k])) for k in ("kernel", "stride", "padding"))
    return f"_max_pool2d({e.arg(node, 0)}, {window})"


def _avg_pool2d(e: Emit, node: Node) -> str:
    ph, pw = pair(node.attrs["padding"])
    return (f"ops.avg_pool2d({e.arg(node, 0)}, {pair(node.attrs['kernel'])}, {pair(node.attrs['stride'])}, "
            f"{(ph, ph, pw, pw)}, count_include_pad={node.attrs['count_include_pad']})")


def _cross_entropy(e: Emit, node: Node) -> str:
    """ops.cross_entropy, whose class indices are int32 or int64 (one kernel forward and back, where
    the decomposition's nine cost the digits CNN's train step a third more)."""
    logits, labels = e.args(node)
    if node.operands[1].dtype not in (DType.i32, DType.i64):
        labels = f"ops.cast({labels}, ms.int32)"
    smoothing = node.attrs["label_smoothing"]
    return f"ops.cross_entropy({logits}, {labels}{f', label_smoothing={smoothing!r}' if smoothing else ''})"


def _iota(e: Emit, node: Node) -> str:
    return f"ops.arange(0, {e.dim(node.attrs['length'])}, dtype={e.dtype(node.attrs['dtype'])})"


#: How computed_in spells a cast.
_CAST = "ops.cast({x}, {dtype})"


RULES: dict[str, Rule | str] = {
    **{name: f"ops.{name}({{0}})" for name in ("abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "erf", "floor",
                                               "sigmoid", "silu", "logical_not", "neg")},
    "tanh": _tanh,
    "relu": _relu,
    "gelu": "ops.gelu({0}, approximate={approximate})",
    "dropout": "{0}",  # the identity: this program only infers (load() returns set_train(False))
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "pow": "ops.pow({0}, {1})",
    "maximum": _nan_first("ops.maximum({0}, {1})"), "minimum": _nan_first("ops.minimum({0}, {1})"),
    "eq": "{0} == {1}", "ne": "{0} != {1}", "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}",
    "ge": "{0} >= {1}",
    "logical_and": "ops.logical_and({0}, {1})", "logical_or": "ops.logical_or({0}, {1})",
    "where": "ops.where({0}, {1}, {2})",
    "cast": "ops.cast({0}, {dtype})",
    "matmul": _matmul,
    "linear": _linear,
    "attention": _attention,
    "conv2d": _conv2d,
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "reduce_sum": _reduce("sum", "keepdim"), "reduce_mean": _reduce("mean", "keep_dims"),
    "reduce_max": _extremum("amax"), "reduce_min": _extremum("amin"),
    "softmax": "_softmax({0}, {axis})",
    # ops.log_softmax's CPU kernel computes float64 in float32; logsumexp keeps float64.
    "log_softmax": "{0} - ops.logsumexp({0}, {axis}, True)",
    "cross_entropy": _cross_entropy,
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "reshape": "ops.reshape({0}, {shape})",
    "transpose": "ops.permute({0}, {perm})",
    "broadcast_to": "ops.broadcast_to({0}, {shape})",
    "concat": "ops.cat([{args}], {axis})",
    "split": lambda e, n: f"ops.split({e.arg(n, 0)}, {n.attrs['sizes']!r}, {n.attrs['axis']})"
                          if len(n.attrs["sizes"]) > 1 else e.arg(n, 0),  # one piece: the tensor itself
    "slice": _slice,
    "gather": "ops.gather({0}, {1}, {axis})",
    "pad": _pad,
    "iota": _iota,
    "constant": "",  # constants become module-level tensors; see _write_model
}

#: Ops whose float16 kernels compute in float16 (sigmoid and silu come out 2 ulps off, rsqrt 1; a
#: softmax, a norm or a sum drifts further): computed in float32 and rounded once, as PyTorch's
#: kernels and the reference do.
_OPMATH_OPS = ("sigmoid", "silu", "rsqrt", "gelu", "softmax", "log_softmax", "layer_norm", "batch_norm", "reduce_sum",
               "reduce_mean", "attention", "linear")
RULES.update({op: computed_in(RULES[op], frozenset({DType.f16}), DType.f32, _CAST) for op in _OPMATH_OPS})

#: Helpers the body calls; MindSpore's compiler inlines them into the graph.
_HELPERS = {
    "max_pool2d": '''
def _max_pool2d(x, kernel, stride, padding):
    # The maximum over each window's rows, then over its columns, of every step-th row or column:
    # ops.max_pool2d skips NaN, which numpy's max keeps, and gives the lowest float for a window of
    # -inf alone. One core, the example cnn's 2x2 pool of 16x16x32x32: 1.6 ms, where
    # ops.max_pool2d took 1.8, and its NaN and -inf put back by a pool of flags 7.3.
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = ops.pad(x, (pw, pw, ph, ph), value=float("-inf"))
    rows = _window_max(x, 2, kh, sh, (x.shape[2] - kh) // sh + 1)
    return _window_max(rows, 3, kw, sw, (x.shape[3] - kw) // sw + 1)


def _window_max(x, axis, size, step, count):
    # Gathered, not sliced: MindSpore 2.10's gradient of a slice with a step along an axis but the
    # last fails ("StridedSliceGrad ... input memory out of bounds"). ops.maximum(a, b) is b where
    # either is NaN (a > b ? a : b): a NaN in a is kept by the where.
    out = _every(x, axis, 0, step, count)
    for i in range(1, size):
        out = ops.where(out != out, out, ops.maximum(out, _every(x, axis, i, step, count)))
    return out


def _every(x, axis, start, step, count):
    # count rows or columns of x, step apart from start
    return ops.gather(x, ms.Tensor(list(range(start, start + step * count, step)), ms.int32), axis)
''',
    "keeping_nan": '''
def _keeping_nan(reduced, x, axes, keepdims):
    # ops.amax and ops.amin skip NaN; numpy's max and min keep it.
    return ops.where(ops.any(ops.isnan(x), axes, keepdims), float("nan"), reduced)
''',
    "softmax": '''
def _softmax(x, axis):
    # ops.softmax gives 0 beside a NaN, and 0 in a row of -inf alone or beside +inf, where the
    # reference's exp(x - max) / sum, written out here, is NaN throughout (ops.amax skips NaN, and
    # exp of the NaN still makes the sum NaN).
    e = ops.exp(x - ops.amax(x, axis, keepdims=True))
    return e / ops.sum(e, axis, keepdim=True)
''',
    "layer_norm": '''
def _layer_norm(x, weight, bias, axes, eps):
    mean = ops.mean(x, axes, keep_dims=True)
    var = ops.mean(ops.square(x - mean), axes, keep_dims=True)
    return (x - mean) / ops.sqrt(var + eps) * weight + bias
''',
    "batch_norm": '''
def _batch_norm(x, mean, var, weight, bias, shape, eps):
    return ((x - ops.reshape(mean, shape)) / ops.sqrt(ops.reshape(var, shape) + eps) * ops.reshape(weight, shape)
            + ops.reshape(bias, shape))
''',
}

_RUNTIME = '''
_DEVICE_TARGETS = {{"ascend": "Ascend", "cuda": "GPU", "gpu": "GPU", "cpu": "CPU"}}


def available_devices():
    """Devices MindSpore can use here, preferred first; a backend that is absent or broken is left out."""
    devices = []
    quiet = logging.root.manager.disable
    logging.disable(logging.WARNING)  # an absent backend's is_available() logs why it is absent
    try:
        for name, backend in (("ascend", "ascend"), ("cuda", "gpu")):
            try:
                context = getattr(ms.device_context, backend)
                if context.is_available() and context.device_count() > 0:
                    devices.append(name)
            except Exception:  # noqa: BLE001 - a broken driver means the device is not usable
                pass
    finally:
        logging.disable(quiet)
    return devices + ["cpu"]


def load(weights=WEIGHTS, device="cpu"):
    """The model with weights from a .safetensors path or a name -> array mapping, on `device`."""
{amp_check}    ms.set_device(_DEVICE_TARGETS[device])
    model = {name}()
    params = {{key: ms.Parameter(_tensor(value), name=key) for key, value in checked_weights(weights).items()}}
    missing, unexpected = ms.load_param_into_net(model, params, strict_load=True)
    if missing or unexpected:
        raise ValueError(f"weights do not match the model: missing {{missing}}, unexpected {{unexpected}}")
    return model.set_train(False)


def _tensor(x):
    x = np.asarray(x, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    if x.dtype.name == "bfloat16":  # MindSpore built for numpy 1 reads ml_dtypes' bfloat16 only via float32
        return ms.Tensor(x.astype(np.float32), dtype=ms.bfloat16)
    return ms.Tensor(x)


def call(model, *tensors):
    """Tensors in, a tuple of tensors out: a pipeline stage's step, with no numpy in between."""
    try:
        outputs = model(*tensors)
    except Exception:
        # A kernel failing inside an ms.jit graph leaves that graph failing every later call ("Invalid
        # output number for flatten stub output nodes"): drop the compiled graphs, so the next call recompiles.
        ms.ms_memory_recycle()
        raise
    return outputs if isinstance(outputs, tuple) else (outputs,)


def accept(x, device="cpu"):
    """Another framework's tensor (anything with __dlpack__) or a numpy array, as a MindSpore
    tensor, and whether it was copied. Through numpy's view of it by DLPack where numpy has the
    dtype: the same memory, at a flat cost (MindSpore's own from_dlpack is also zero-copy, but its
    time grows with the size: 33 ms at 64 MiB), which from_numpy copies where it is not row-major
    (a channels-last torch result); bfloat16 by MindSpore's from_dlpack; else a copy."""
    try:
        array = np.from_dlpack(x)
        return ms.from_numpy(array), not array.flags.c_contiguous
    except (AttributeError, TypeError, RuntimeError, BufferError):
        pass
    try:
        return ms.utils.dlpack.from_dlpack(x.__dlpack__()), False
    except (AttributeError, TypeError, RuntimeError, BufferError):
        return _tensor(np.asarray(x)), True


class Exported:
    """A MindSpore tensor as other frameworks take it where numpy cannot: MindSpore's tensors have
    no __dlpack__ of their own, only to_dlpack's capsule, so this gives them one (and __array__
    for a copy)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, stream=None, **kwargs):
        return ms.utils.dlpack.to_dlpack(self.tensor)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU

    def __array__(self, dtype=None, copy=None):
        return to_numpy(self.tensor) if dtype is None else to_numpy(self.tensor).astype(dtype)


def export(tensor):
    """A result as other frameworks take it. On the CPU, numpy's view of it: the same memory, which
    numpy hands on by DLPack without calling MindSpore again (its to_dlpack and asnumpy, called
    from another thread, wait for the work MindSpore has in flight: a pipeline's next micro-batch).
    Elsewhere, and for bfloat16, which numpy lacks, MindSpore's own capsule."""
    if tensor.dtype == ms.bfloat16 or ms.get_context("device_target") != "CPU":
        return Exported(tensor)
    return tensor.asnumpy()


def gradients(model, *tensors):
    """The outputs (the loss, a scalar, first) and the loss's gradient by each trainable param,
    name -> tensor, by mindspore.value_and_grad: what a train step takes."""
    weights = model.trainable_params()
    outputs, grads = ms.value_and_grad(model, None, weights, has_aux=len(OUTPUTS) > 1)(*tensors)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return outputs, {{param.name: grad for param, grad in zip(weights, grads)}}


def train_step(model, update, state, scalars, *tensors):
    """One optimizer step on one batch, compiled by `ms.jit` as one graph (one per model and
    optimizer): the loss's gradients by mindspore.value_and_grad, then `update` (the optimizer's
    own generated program, `as_function` of its module) on the params and the gradients each as
    one flat vector, its new values assigned to the params. The inputs are tensors or numpy
    arrays. The outputs (the loss first) and the optimizer's new state."""
    steps = _TRAIN_STEPS.setdefault(model, {{}})
    if update not in steps:
        steps[update] = _compiled_train_step(model, update, len(state) + len(scalars))
    tensors = [x if isinstance(x, ms.Tensor) else _tensor(x) for x in tensors]
    outputs, state = steps[update](*state, *(ms.Tensor(scalar) for scalar in scalars), *tensors)
    return (outputs if isinstance(outputs, tuple) else (outputs,)), state


_TRAIN_STEPS = weakref.WeakKeyDictionary()  # model -> optimizer -> compiled train step


def _compiled_train_step(model, update, taken):
    """The step, of the optimizer's state and scalars then the loss's inputs (its first `taken`
    arguments are the optimizer's: tensors in tuples would be compiled in as constants)."""
    weights = model.trainable_params()
    loss_and_grads = ms.value_and_grad(model, None, weights, has_aux=len(OUTPUTS) > 1)

    @ms.jit
    def step(*tensors):
        optimizer, tensors = tensors[:taken], tensors[taken:]
        outputs, grads = loss_and_grads(*tensors)
        flat = ops.concat([param.reshape(-1) for param in weights])
        new = update(flat, ops.concat([grad.reshape(-1) for grad in grads]), *optimizer)
        new = new if isinstance(new, tuple) else (new,)
        at = 0
        for param in weights:
            ops.assign(param, new[0][at:at + param.size].reshape(param.shape))
            at += param.size
        return outputs, new[1:]

    return step


def as_function(model):
    """This program as a function of tensors, for another program's train step to call."""
    return model


def parameters(model):
    """The trainable params, name -> parameter."""
    return {{param.name: param for param in model.trainable_params()}}


def assign(model, values):
    """Write new values (name -> tensor) over params and buffers: a train step's update. ops.assign
    writes the memory a compiled construct reads; Parameter.set_data would give the param new
    memory, which a graph compiled before does not see."""
    for param in model.get_parameters():
        if param.name in values:
            ops.assign(param, values[param.name])


def to_numpy(tensor):
    return (tensor.astype(ms.float32) if tensor.dtype == ms.bfloat16 else tensor).asnumpy()


def run(model, inputs, device="cpu"):
    """Numpy in, numpy out (bfloat16 outputs come back as float32)."""
    return [to_numpy(y) for y in call(model, *(_tensor(x) for x in inputs))]

'''

_BF16_ON_CPU = '''    if device == "cpu":
        raise ValueError("this model computes matmul and conv2d in bfloat16 (mixed precision), which "
                         "MindSpore's CPU kernels lack: run it on Ascend, or generate it without mixed precision")
'''


def _runtime(bf16_matmuls: bool) -> str:
    return _RUNTIME.replace("{amp_check}", _BF16_ON_CPU if bf16_matmuls else "")


_DTYPES = {DType.f16: "ms.float16", DType.bf16: "ms.bfloat16", DType.f32: "ms.float32", DType.f64: "ms.float64",
           DType.i32: "ms.int32", DType.i64: "ms.int64", DType.bool: "ms.bool_"}

TARGET = Target(
    name="mindspore", framework="mindspore", extra="mindspore",
    std_imports=("import logging", "import weakref"),
    imports=("import mindspore as ms", "import mindspore.utils.dlpack",
             "from mindspore import nn, ops", "from mindspore.common.initializer import initializer"),
    runtime_code=_runtime(False),
    dtypes=_DTYPES,
    rules=RULES,
    helpers=tuple(_HELPERS.values()),
    # bfloat16: MindSpore 2.10's CPU kernels lack it for 38 of the 53 ops taking it (even reshape), and,
    # built for numpy 1 but run under numpy 2, it can neither create bfloat16 Parameters nor fold
    # constants through a cast to or from bfloat16. Ascend users get bfloat16 as mixed precision.
    # float64: Conv2D rejects it on every device; AvgPool computes it in float32 (errors ~1e-5), and
    # so does CrossEntropy (5e-8 off torch's float64), which the decomposition computes in float64.
    # MindSpore's graph compiler reads a Python float as float32 (x * 0.35 on float64 came out 2e-8
    # off, relative); a float64 tensor built from it in the graph keeps every digit.
    float_literals={DType.f64: "ms.Tensor({}, ms.float64)"},
    unsupported_dtypes={**{op: frozenset({DType.bf16}) for op in RULES},
                        "conv2d": frozenset({DType.bf16, DType.f64}), "avg_pool2d": frozenset({DType.bf16, DType.f64}),
                        "cross_entropy": frozenset({DType.bf16, DType.f64})},
    training_options={"differentiated": True},
)

@functools.cache
def cell_attributes() -> frozenset[str]:
    """The names an `nn.Cell` instance defines, asked of MindSpore itself: a param's attribute
    never takes one (the state_dict keeps the user's name, as each Parameter's `name`)."""
    require_framework("mindspore")
    from mindspore import nn

    return frozenset(dir(nn.Cell()))


_LOW = {"fp16": DType.f16, "bf16": DType.bf16}
_MIXED_PRECISION_OPS = ("matmul", "linear", "conv2d")


def emit(graph: Graph, source: str, *, mixed_precision: MixedPrecision | None = None,
         differentiated: bool = False) -> GeneratedModule:
    """The standalone MindSpore program for `graph`.

    `mixed_precision` ("fp16" or "bf16") computes float32 matmuls and convolutions in that dtype and
    casts their results back to float32, as Ascend's automatic mixed precision (level O2) does.
    MindSpore's CPU kernels have no bfloat16 matmul or conv2d, so with "bf16" `load` refuses the CPU.
    `differentiated=True` (what training compiles) picks lowerings whose gradients cost less.
    """
    rules = {**RULES, "relu": _differentiated_relu} if differentiated else RULES
    if mixed_precision is None:
        target = dataclasses.replace(TARGET, rules=rules)
        return write_module(target, graph, source, functools.partial(_write_model, target=target))
    if mixed_precision not in _LOW:
        raise ShipeiError(f"unknown mixed precision {mixed_precision!r}", hint="use 'fp16', 'bf16' or None")
    low = _LOW[mixed_precision]
    amp = {op: computed_in(RULES[op], frozenset({DType.f32}), low, _CAST) for op in _MIXED_PRECISION_OPS}
    needs_device = low is DType.bf16 and any(n.op in amp for n in graph.nodes)
    target = dataclasses.replace(TARGET, rules={**rules, **amp}, runtime_code=_runtime(needs_device))
    note = f"# Mixed precision: float32 {' and '.join(amp)} compute in {TARGET.dtypes[low]}."
    return write_module(target, graph, source, lambda code, g, module, body: _write_model(
        code, g, module, body, note, target))


def _attr_hint(value: Value) -> str:
    hint = "_".join(param_path(value))
    return "p" + hint if hint.startswith("_") else hint  # Cell keeps its internals in _names


def _write_model(code: Code, graph: Graph, module: ModuleNames, emit_body, note: str = "",
                 target: Target = TARGET) -> None:
    model = Code()
    _write_cell(model, graph, module, emit_body, note, target)
    for helper in called_helpers(_HELPERS.values(), model):
        code(*helper.strip("\n").splitlines(), "", "")
    code(*model.lines)


def _write_cell(code: Code, graph: Graph, module: ModuleNames, emit_body, note: str, target: Target) -> None:
    attrs = python_namespace(cell_attributes())
    names = module.names
    params = {p: attrs.fresh(_attr_hint(p)) for p in graph.params}
    constants: dict[Node, str] = {}
    e = Emit(target, graph, names, lambda v: f"self.{params[v]}", lambda n: constants[n])
    # Constants live at module level, not on the cell, so that the body never reads `self` but for
    # params: a fused region (a local function) takes what it reads as arguments, and MindSpore's
    # compiler cannot take one named `self`.
    constants.update(hoisted_constants(graph, names, "CONST"))
    for node, name in constants.items():
        value = e.literal("constant", "value", node.attrs["value"])
        code(f"{name} = ms.Tensor({value}, dtype={e.dtype(node.attrs['dtype'])})")
    if constants:
        code("", "")
    if note:
        code(note)
    with code.block(f"class {module.model}(nn.Cell):"):
        with code.block("def __init__(self):"):
            code("super().__init__()")
            for p, attr in params.items():
                shape = tuple(int(d) for d in p.shape)
                grad = ", requires_grad=False" if p.param.buffer else ""
                code(f"self.{attr} = ms.Parameter(initializer('zeros', {shape!r}, {e.dtype(p.dtype)}), "
                     f"name={p.name!r}{grad})")
        code("")
        inputs = [names.fresh(v.name) for v in graph.inputs]
        for v, n in zip(graph.inputs, inputs, strict=True):
            e.values[v] = n
        if graph.groups():
            code("# jit_level O1: MindSpore's graph-kernel fusion (Ascend, GPU)")
            code("@ms.jit(jit_level='O1')")
        else:
            code("@ms.jit")
        with code.block(f"def construct(self{''.join(', ' + n for n in inputs)}):"):
            e.bind_symbols(code, inputs)
            emit_body(e, code)
            code(f"return {', '.join(e.values[v] for v in graph.outputs)}")
