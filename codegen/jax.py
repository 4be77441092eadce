"""JAX target: a pure `forward(params, *inputs)` over a dict of weights keyed by the DSL's names,
compiled with `jax.jit`; TPU preferred, then GPU, then CPU.

The options a TPU user needs are keyword arguments of `emit`, written at the top of the generated
module so that it describes itself:

- `compute_dtype="bf16"`: matmul and conv take bfloat16 operands and accumulate in float32
  (`preferred_element_type`); the result is cast back to the declared dtype.
- `matmul_precision`: "default", "high" or "highest" (`jax.lax.Precision`) on every matmul and conv.
  The default is "highest", so float32 means float32 on every device, as in numpy and PyTorch;
  "default" lets TPUs use one bfloat16 pass and GPUs use TF32.
- `pad_to=N`: `run()` pads the batch dim to a multiple of N (repeating the last row, so padded rows
  stay in every op's domain) and slices the outputs back. The generator proves first that no op
  mixes batch rows (reductions, contractions, concat or pad along the batch dim), so padded rows
  never reach real ones; results differ from unpadded ones at most by the rounding of the kernels
  XLA picks for the padded shape (a few ulps; bitwise equal for dense and conv layers on CPU).

64-bit dtypes are real only under `jax.enable_x64(True)`, which `load()` and `run()` enter; the
generated module does not flip the process-wide flag, so importing it changes no other JAX code.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from ..ir.batch import batch_layout
from ..ir.errors import ShipeiError
from ..ir.graph import Graph, Node, Value
from ..ir.types import LOW_PRECISION, DType
from .module import GeneratedModule, ModuleNames, write_module
from .writer import (
    Code,
    Emit,
    Namespace,
    Rule,
    Target,
    attention,
    called_helpers,
    computed_in,
    hoisted_constants,
    is_global_average,
    nan_kept,
    pair,
    prefixed_params,
    py_literal,
    reduce_args,
)

#: matmul_precision option -> `jax.lax.Precision` member.
PRECISIONS = {"default": "DEFAULT", "high": "HIGH", "highest": "HIGHEST"}
#: compute_dtype option -> the dtype matmul and conv operands are cast to.
COMPUTE_DTYPES = {"bf16": DType.bf16}

_END = 2**62  # slice's "to the end" stop


@dataclasses.dataclass(frozen=True)
class Options:
    """What `emit` accepts besides the graph; validated here so a typo fails at compile time."""

    compute_dtype: str | None = None
    matmul_precision: str = "highest"
    pad_to: int | None = None

    def __post_init__(self) -> None:
        if self.compute_dtype is not None and self.compute_dtype not in COMPUTE_DTYPES:
            raise ShipeiError(f"jax: compute_dtype must be None or one of {', '.join(COMPUTE_DTYPES)}, "
                              f"got {self.compute_dtype!r}")
        if self.matmul_precision not in PRECISIONS:
            raise ShipeiError(f"jax: matmul_precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.matmul_precision!r}")
        if self.pad_to is not None and (isinstance(self.pad_to, bool) or not isinstance(self.pad_to, int)
                                        or self.pad_to < 1):
            raise ShipeiError(f"jax: pad_to must be None or a positive int, got {self.pad_to!r}")


class JaxEmit(Emit):
    """The shared body walk, plus the options that the matmul and conv rules read."""

    def __init__(self, graph: Graph, names: Namespace, options: Options,
                 param_ref: Callable[[Value], str], constant_ref: Callable[[Node], str]):
        super().__init__(TARGET, graph, names, param_ref, constant_ref)
        self.options = options


def _in_f32(rule: Rule | str) -> Rule:
    """`rule` for f16/bf16 computed in float32 and rounded once, as the reference's "declared"
    precision and the frameworks' fused kernels do."""
    return computed_in(rule, LOW_PRECISION, DType.f32, "{x}.astype({dtype})")


def _contract(e: JaxEmit, node: Node, fn: str, keywords: str, operands: list[str] | None = None,
              bias: str | None = None) -> str:
    """`fn(a, b, keywords, precision=PRECISION)` [+ bias]. With a compute dtype, float operands are
    cast to it; then, and for f16/bf16 operands, products accumulate in float32, the bias is added
    in float32 and the result is cast back to the declared dtype once."""
    out, operands = node.result.dtype, operands or e.args(node)
    add = f" + {bias}" if bias else ""
    if not out.is_float or (e.options.compute_dtype is None and out not in LOW_PRECISION):
        return f"{fn}({', '.join(operands)}, {keywords}precision=PRECISION){add}"
    args = ", ".join(operands if e.options.compute_dtype is None
                     else (f"{a}.astype(COMPUTE_DTYPE)" for a in operands))
    call = f"{fn}({args}, {keywords}precision=PRECISION, preferred_element_type=jnp.float32){add}"
    if out is DType.f32:
        return call
    return f"({call}).astype({e.dtype(out)})" if bias else f"{call}.astype({e.dtype(out)})"


def _matmul(e: JaxEmit, node: Node) -> str:
    return _contract(e, node, "jnp.matmul", "")


def _linear(e: JaxEmit, node: Node) -> str:
    x, w, *bias = e.args(node)
    return _contract(e, node, "jnp.matmul", "", [x, f"{w}.T"], bias[0] if bias else None)


def _attention(e: JaxEmit, node: Node) -> str:
    return attention(e, node, "jnp.matmul({q}, jnp.swapaxes({k}, -1, -2), precision=PRECISION) * {scale}",
                     "jnp.where(jnp.tri({length}, {source}, dtype=bool), {scores}, -jnp.inf)",
                     "jnp.matmul(jax.nn.softmax({scores}, axis=-1), {v}, precision=PRECISION)")


def _conv2d(e: JaxEmit, node: Node) -> str:
    (ph, pw), dilation, groups = pair(node.attrs["padding"]), pair(node.attrs["dilation"]), node.attrs["groups"]
    keywords = f"window_strides={pair(node.attrs['stride'])}, padding={((ph, ph), (pw, pw))}, "
    keywords += f"rhs_dilation={dilation}, " if dilation != (1, 1) else ""
    keywords += f"feature_group_count={groups}, " if groups != 1 else ""
    keywords += "dimension_numbers=('NCHW', 'OIHW', 'NCHW'), "
    x, w, *bias = e.args(node)
    return _contract(e, node, "jax.lax.conv_general_dilated", keywords, [x, w],
                     f"{bias[0]}.reshape(-1, 1, 1)" if bias else None)


def _pool(x: str, node: Node, init: str, op: str) -> str:
    """reduce_window over an NCHW pool's H and W, computed channels-last.

    XLA:CPU's reduce_window is fastest in NHWC and fuses there with its neighbours; the transposes
    cancel against those XLA puts around its NHWC convolutions (the example CNN: 1.14x the
    hand-written NHWC program's time with an NCHW window, 1.0x with this)."""
    (kh, kw), (sh, sw), (ph, pw) = (pair(node.attrs[k]) for k in ("kernel", "stride", "padding"))
    window = f"{(1, kh, kw, 1)}, {(1, sh, sw, 1)}, {((0, 0), (ph, ph), (pw, pw), (0, 0))}"
    nhwc = f"jnp.transpose({x}, (0, 2, 3, 1))"
    return f"jnp.transpose(jax.lax.reduce_window({nhwc}, {init}, {op}, {window}), (0, 3, 1, 2))"


def _max_pool2d(e: JaxEmit, node: Node) -> str:
    """The maxima of strided views, over rows then columns (`window_max`), computed channels-last
    as `_pool`: XLA:CPU runs a reduce_window max on YNNPACK, which skips NaN where the reference
    keeps it, and jnp.maximum keeps it (XLA fuses the views into one loop). Padded with -inf, as
    the reference pads. Its derivative splits a tie between the views (reduce_window's gave one
    element all of it); a window's sum is the same."""
    (kh, kw), (sh, sw), (ph, pw) = (pair(node.attrs[k]) for k in ("kernel", "stride", "padding"))
    _, _, oh, ow = node.result.type.shape  # static: the IR computes a pool's output size
    x = f"jnp.transpose({e.arg(node, 0)}, (0, 2, 3, 1))"
    if ph or pw:
        x = f"jnp.pad({x}, ((0, 0), ({ph}, {ph}), ({pw}, {pw}), (0, 0)), constant_values=-jnp.inf)"
    rows = f"window_max({x}, 1, {kh}, {sh}, {oh})"
    return f"jnp.transpose(window_max({rows}, 2, {kw}, {sw}, {ow}), (0, 3, 1, 2))"


def _avg_pool2d(e: JaxEmit, node: Node) -> str:
    x = e.arg(node, 0)
    if is_global_average(node):
        return f"jnp.mean({x}, axis=(2, 3), keepdims=True)"
    total = _pool(x, node, "0.0", "jax.lax.add")
    (kh, kw), padding = pair(node.attrs["kernel"]), pair(node.attrs["padding"])
    if node.attrs["count_include_pad"] or padding == (0, 0):
        return f"{total} / {kh * kw}"
    # Divide each window by the count of its elements that are not padding.
    return f"{total} / {_pool(f'jnp.ones_like({x})', node, '0.0', 'jax.lax.add')}"


def _reduce(fn: str) -> Callable[[JaxEmit, Node], str]:
    def rule(e: JaxEmit, node: Node) -> str:
        x = node.operands[0]
        # jnp.sum widens int32 to int64 as numpy does; the IR keeps the operand's dtype.
        dtype = f", dtype={e.dtype(x.dtype)}" if fn == "sum" and x.dtype.is_int else ""
        return f"jnp.{fn}({e.arg(node, 0)}{reduce_args(node)}{dtype})"

    return rule


def _extremum(fn: str) -> Callable[[JaxEmit, Node], str]:
    """jnp.max or jnp.min, NaN where the elements reduced hold one: XLA:CPU runs a large reduction
    on YNNPACK, whose max and min skip NaN (found on 16x32x32 per row)."""
    return nan_kept(_reduce(fn), "jnp.where(jnp.any(jnp.isnan({x}){args}), jnp.nan, {reduced})")


def _layer_norm(e: JaxEmit, node: Node) -> str:
    x, w, b = e.args(node)
    axes = tuple(range(-node.operands[1].type.rank, 0))
    # jnp.var is the two-pass variance, mean((x - mean)^2), of the reference.
    return (f"({x} - jnp.mean({x}, axis={axes!r}, keepdims=True)) "
            f"/ jnp.sqrt(jnp.var({x}, axis={axes!r}, keepdims=True) + {node.attrs['eps']!r}) * {w} + {b}")


def _batch_norm(e: JaxEmit, node: Node) -> str:
    x, mean, var, w, b = e.args(node)
    rank = node.operands[0].type.rank
    per_channel = "" if rank == 2 else f"[:, {', '.join(['None'] * (rank - 2))}]"
    # One multiply-add per element; the per-channel scale and shift are computed once.
    scale = f"{w} * jax.lax.rsqrt({var} + {node.attrs['eps']!r})"
    return f"{x} * ({scale}){per_channel} + ({b} - {mean} * {scale}){per_channel}"


def _slice(e: JaxEmit, node: Node) -> str:
    index = [":"] * node.operands[0].type.rank
    for axis, start, stop, step in zip(*(node.attrs[k] for k in ("axes", "starts", "stops", "steps")), strict=True):
        index[axis] = f"{start or ''}:{'' if stop >= _END else stop}" + (f":{step}" if step != 1 else "")
    return f"{e.arg(node, 0)}[{', '.join(index)}]"


def _gather(e: JaxEmit, node: Node) -> str:
    # Indices are in range by the op's contract; "fill" makes a stray one NaN rather than a plausible row.
    return f"jnp.take({e.arg(node, 0)}, {e.arg(node, 1)}, axis={node.attrs['axis']}, mode='fill')"


def _pad(e: JaxEmit, node: Node) -> str:
    pads = node.attrs["pads"]
    pairs = tuple((pads[2 * i], pads[2 * i + 1]) for i in range(len(pads) // 2))
    value = node.attrs["value"]
    if not pairs:
        return e.arg(node, 0)  # a 0-d tensor has nothing to pad
    return f"jnp.pad({e.arg(node, 0)}, {pairs!r}" + (f", constant_values={py_literal(value)})" if value else ")")


def _relu(e: JaxEmit, node: Node) -> str:
    """jax.nn.relu with NaN put back: XLA:CPU fuses relu into a reduction it runs on YNNPACK, whose
    max(x, 0) maps NaN to 0 (the example cnn's relu before its global pool). jax.nn.relu's own
    derivative stays (0 at 0)."""
    x = e.arg(node, 0)
    return f"jnp.where(jnp.isnan({x}), {x}, jax.nn.relu({x}))" if node.result.dtype.is_float else f"jax.nn.relu({x})"


def _split(e: JaxEmit, node: Node) -> str:
    sizes = node.attrs["sizes"]
    if len(sizes) == 1:
        return e.arg(node, 0)  # one piece is the whole tensor; jnp.split would return a list
    cuts = [int(c) for c in np.cumsum(sizes)[:-1]]
    return f"jnp.split({e.arg(node, 0)}, {cuts!r}, axis={node.attrs['axis']})"


def _gelu(e: JaxEmit, node: Node) -> str:
    # jax.nn.gelu approximates with tanh unless told otherwise; the IR's default is the exact erf form.
    return f"jax.nn.gelu({e.arg(node, 0)}, approximate={node.attrs['approximate'] == 'tanh'})"


RULES: dict[str, Rule | str] = {
    **{name: f"jnp.{name}({{0}})" for name in ("abs", "exp", "log", "sqrt", "sin", "cos", "tanh", "floor",
                                               "logical_not")},
    "neg": "-{0}", "rsqrt": "jax.lax.rsqrt({0})", "erf": "jax.lax.erf({0})",
    # XLA's 16-bit logistic is 1 ulp off at ~1/3 of points: in float32, it is correctly rounded.
    "sigmoid": _in_f32("jax.nn.sigmoid({0})"), "relu": _relu, "silu": _in_f32("jax.nn.silu({0})"),
    "gelu": _in_f32(_gelu),
    "dropout": "{0}",  # the identity at inference
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "pow": "jnp.power({0}, {1})",
    "maximum": "jnp.maximum({0}, {1})", "minimum": "jnp.minimum({0}, {1})",
    "eq": "{0} == {1}", "ne": "{0} != {1}", "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}",
    "ge": "{0} >= {1}",
    "logical_and": "jnp.logical_and({0}, {1})", "logical_or": "jnp.logical_or({0}, {1})",
    "where": "jnp.where({0}, {1}, {2})",
    "cast": "{0}.astype({dtype})",  # float to int truncates toward zero, float to bool is x != 0
    "matmul": _matmul,
    "linear": _linear,
    "attention": _in_f32(_attention),
    "conv2d": _conv2d,
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _in_f32(_avg_pool2d),
    "reduce_sum": _reduce("sum"), "reduce_mean": _reduce("mean"),
    "reduce_max": _extremum("max"), "reduce_min": _extremum("min"),
    "softmax": _in_f32("jax.nn.softmax({0}, axis={axis})"),
    "log_softmax": _in_f32("jax.nn.log_softmax({0}, axis={axis})"),
    "layer_norm": _in_f32(_layer_norm),
    "batch_norm": _in_f32(_batch_norm),
    "reshape": "jnp.reshape({0}, {shape})",
    "transpose": "jnp.transpose({0}, {perm})",
    "broadcast_to": "jnp.broadcast_to({0}, {shape})",
    "concat": "jnp.concatenate([{args}], axis={axis})",
    "split": _split,
    "slice": _slice,
    "gather": _gather,
    "pad": _pad,
    "iota": "jnp.arange({length}, dtype={dtype})",
    "constant": "",  # constants are module-level numpy arrays; see _write_model
}

_RUNTIME = '''
def available_devices():
    """Platforms this machine offers, preferred first: TPU, then GPU, then CPU."""
    found = []
    for platform in ("tpu", "gpu", "cpu"):
        try:
            jax.devices(platform)
        except RuntimeError:  # jax has no backend for this platform here
            continue
        found.append(platform)
    return found


def load(weights=WEIGHTS, device="cpu"):
    """The params pytree, from a .safetensors path or a name -> array mapping, placed on `device`."""
    arrays = checked_weights(weights)
    with jax.enable_x64(True):  # 64-bit weights stay 64-bit
        return {key: jax.device_put(array, jax.devices(device)[0]) for key, array in arrays.items()}


def to_numpy(y):
    y = np.asarray(y)
    return y.astype(np.float32) if y.dtype == jnp.bfloat16 else y  # in numpy: no XLA compile per cast


def gradients(model, *arrays):
    """The outputs (the loss, a scalar, first) and the loss's gradient by each trainable param,
    name -> array, by jax.value_and_grad: what a train step takes."""
    trained = {{key: value for key, value in model.items() if key not in BUFFERS}}
    kept = {{key: value for key, value in model.items() if key in BUFFERS}}
    with jax.enable_x64(True):
        return _loss_and_gradients(trained, kept, *arrays)


@jax.jit
def _loss_and_gradients(trained, kept, *arrays):
    def loss(params):
        outputs = forward({{**params, **kept}}, *arrays)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return outputs[0], outputs

    (_, outputs), grads = jax.value_and_grad(loss, has_aux=True)(trained)
    return outputs, grads


def train_step(model, update, state, scalars, *arrays):
    """One optimizer step on one batch, compiled as one XLA program: the loss's gradients by
    jax.value_and_grad, then `update` (the optimizer's own generated program, `as_function` of its
    module, traced into this one) on the params and the gradients each raveled into one vector.
    The inputs are arrays or numpy arrays (jit takes those as they are). The new params replace
    the model's; the outputs (the loss first) and the optimizer's new state."""
    trained = {{key: value for key, value in model.items() if key not in BUFFERS}}
    kept = {{key: value for key, value in model.items() if key in BUFFERS}}
    with jax.enable_x64(True):
        outputs, new, state = _train_step(update, trained, kept, tuple(state), tuple(scalars), *arrays)
    model.update(new)
    return outputs, state


@jax.jit
def _train_step(update, trained, kept, state, scalars, *arrays):
    outputs, grads = _loss_and_gradients(trained, kept, *arrays)
    flat, unravel = jax.flatten_util.ravel_pytree(trained)
    new = update(flat, jax.flatten_util.ravel_pytree(grads)[0], *state, *scalars)
    new = new if isinstance(new, tuple) else (new,)
    return outputs, unravel(new[0]), new[1:]


def as_function(model):
    """This program as a function of arrays, for another program's train step to trace."""
    return jax.tree_util.Partial(forward, model)


def parameters(model):
    """The trainable params, name -> array."""
    return {{key: value for key, value in model.items() if key not in BUFFERS}}


def assign(model, values):
    """New values (name -> array) for params and buffers: a train step's update (the dict is the model)."""
    model.update(values)


def placed(model, inputs, device):
    """Numpy inputs as `run` hands them to jit, which copies them to the params' device itself (a
    device_put of each first took the example MLP from 310 to 395 us a call on CPU): as they are,
    or put on `device` where there are no params to follow."""
    if model:
        return inputs
    with jax.enable_x64(True):
        return [jax.device_put(x, jax.devices(device)[0]) for x in inputs]


def call(model, *arrays):
    """Arrays in, a tuple of arrays out: a pipeline stage's step, with no numpy in between."""
    with jax.enable_x64(True):
        outputs = forward(model, *arrays)
    return outputs if isinstance(outputs, tuple) else (outputs,)


def accept(x, device="cpu"):
    """Another framework's tensor (anything with __dlpack__) or a numpy array, as a jax array on
    `device`, and whether it was copied. DLPack hands over the same memory where it is 64-byte
    aligned (XLA copies it otherwise: MindSpore's results never are); what DLPack cannot carry (a
    strided view) is copied through numpy. 64-bit values stay 64-bit (without x64, jax narrows them)."""
    with jax.enable_x64(True):
        try:
            array = jax.dlpack.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError, ValueError):
            return jax.device_put(np.asarray(x), jax.devices(device)[0]), True
        return jax.device_put(array, jax.devices(device)[0]), _unaligned(x)


def _unaligned(x):
    try:
        return np.from_dlpack(x).ctypes.data % 64 != 0
    except (TypeError, RuntimeError, BufferError, AttributeError):  # numpy has no bfloat16 to look through
        return False


def export(array):
    """A result as other frameworks take it: jax arrays speak DLPack themselves."""
    return array
'''

_RUN = '''

def run(model, inputs, device="cpu"):
    """Numpy in, numpy out (bfloat16 outputs as float32)."""
    return [to_numpy(y) for y in call(model, *placed(model, inputs, device))]
'''

_RUN_PADDED = '''

def run(model, inputs, device="cpu"):
    """Numpy in, numpy out (bfloat16 outputs as float32); the batch is padded to a multiple of PAD_TO."""
    inputs, batch = pad_batch(inputs)
    return unpad_batch([to_numpy(y) for y in call(model, *placed(model, inputs, device))], batch)
'''

_WINDOW_MAX = '''

def window_max(x, axis, size, step, count):
    """The maximum of each of `count` windows of `size` along `axis`, `step` apart."""
    span = step * (count - 1) + 1
    out = jax.lax.slice_in_dim(x, 0, span, step, axis=axis)
    for i in range(1, size):
        out = jnp.maximum(out, jax.lax.slice_in_dim(x, i, i + span, step, axis=axis))
    return out
'''

#: The generation options, written at the top of the module so that it describes itself.
_OPTIONS = """# Generation options; regenerate to change them.
COMPUTE_DTYPE = {compute}  # matmul/conv operand dtype, accumulating in float32 (None: the declared dtype)
PRECISION = jax.lax.Precision.{precision}  # of every matmul and conv
PAD_TO = {pad_to!r}  # run() pads the batch dim to a multiple of this and slices it back
"""

TARGET = Target(
    name="jax", framework="jax", extra="jax",
    imports=("import jax", "import jax.flatten_util", "import jax.numpy as jnp"),
    runtime_code=_RUNTIME + _RUN,
    dtypes={DType.f16: "jnp.float16", DType.bf16: "jnp.bfloat16", DType.f32: "jnp.float32",
            DType.f64: "jnp.float64", DType.i32: "jnp.int32", DType.i64: "jnp.int64", DType.bool: "jnp.bool_"},
    rules=RULES,
    helpers=(_OPTIONS, _RUN_PADDED, _WINDOW_MAX),
    defines=frozenset({"forward", "pad_batch", "unpad_batch"}),
    autocast={DType.bf16: {"compute_dtype": "bf16"}},
)

def emit(graph: Graph, source: str, *, compute_dtype: str | None = None, matmul_precision: str = "highest",
         pad_to: int | None = None) -> GeneratedModule:
    """The standalone JAX program for `graph`; see the module docstring for the options."""
    options = Options(compute_dtype, matmul_precision, pad_to)
    target = TARGET if pad_to is None else dataclasses.replace(TARGET, runtime_code=_RUNTIME + _RUN_PADDED)
    return write_module(target, graph, source, functools.partial(_write_model, options=options))


def _numpy_dtype(dtype: DType) -> str:
    return "jnp.bfloat16" if dtype is DType.bf16 else f"np.{dtype.numpy.name}"


def _write_model(code: Code, graph: Graph, module: ModuleNames, emit_body, options: Options) -> None:
    names = module.names
    batch = batch_layout(graph, "pad_to") if options.pad_to is not None else None
    compute = COMPUTE_DTYPES.get(options.compute_dtype)
    code(*_OPTIONS.format(compute=TARGET.dtypes[compute] if compute else None,
                          precision=PRECISIONS[options.matmul_precision], pad_to=options.pad_to).splitlines())
    constants: dict[Node, str] = {}
    constants.update(hoisted_constants(graph, names, "CONST"))
    for node, name in constants.items():
        value = py_literal(np.asarray(node.attrs["value"]).tolist())
        code(f"{name} = np.array({value}, dtype={_numpy_dtype(node.attrs['dtype'])})")
    code("", "")
    e = JaxEmit(graph, names, options, lambda v: f"params[{v.name!r}]", constants.__getitem__)
    e.layer_ref = prefixed_params("params")
    inputs = [names.fresh(v.name) for v in graph.inputs]
    for v, n in zip(graph.inputs, inputs, strict=True):
        e.values[v] = n
    values = [*graph.inputs, *graph.params, *(r for n in graph.nodes for r in n.results)]
    if any(v.dtype in (DType.f64, DType.i64) for v in values):
        code("# f64 and i64 are 64-bit only under jax.enable_x64(True), which load() and run() enter.")
    code("@jax.jit")
    with code.block(f"def forward({', '.join(['params', *inputs])}):"):
        code('"""The model: a pure function of `params` (arrays keyed by the DSL\'s names) and the inputs."""')
        e.bind_symbols(code, inputs)
        emit_body(e, code)
        code(f"return {', '.join(e.values[v] for v in graph.outputs)}")
    if batch is not None:
        _write_padding(code, e, batch.symbol, batch.inputs, batch.outputs)
    for helper in called_helpers((_WINDOW_MAX,), code):
        code(*helper.splitlines())


def _widths(rank: int, axes: tuple[int, ...]) -> str:
    """np.pad's (before, after) pairs: `extra` after each batch axis."""
    pairs = ["(0, extra)" if a in axes else "(0, 0)" for a in range(rank)]
    return f"({', '.join(pairs)}{',' if rank == 1 else ''})"


def _write_padding(code: Code, e: JaxEmit, batch: str, input_axes: list[tuple[int, ...]],
                   output_axes: list[tuple[int, ...]]) -> None:
    """pad_batch() and unpad_batch(), which run() calls around forward."""
    size = e.symbols[batch]
    first = next(i for i, axes in enumerate(input_axes) if axes)
    code("", "")
    with code.block("def pad_batch(inputs):"):
        code(f'"""The inputs with batch dim {batch} padded to a multiple of PAD_TO by repeating the last row, '
             f'and {batch}."""',
             f"{size} = inputs[{first}].shape[{input_axes[first][0]}]",
             f"extra = -{size} % PAD_TO")
        padded = [f"np.pad(inputs[{i}], {_widths(v.type.rank, axes)}, mode='edge')" if axes else f"inputs[{i}]"
                  for i, (v, axes) in enumerate(zip(e.graph.inputs, input_axes, strict=True))]
        code(f"return [{', '.join(padded)}], {size}")
    code("", "")
    with code.block(f"def unpad_batch(outputs, {size}):"):
        code('"""The outputs with the batch padding sliced off."""')
        sliced = [f"outputs[{i}]" + (f"[{', '.join(f':{size}' if a in axes else ':' for a in range(max(axes) + 1))}]"
                                     if axes else "") for i, axes in enumerate(output_axes)]
        code(f"return [{', '.join(sliced)}]")
