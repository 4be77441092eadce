"""TensorFlow target: a `tf.Module` whose `__call__` is one `tf.function(jit_compile=True)`, so XLA
compiles the whole model; under `TPUStrategy` where a TPU is attached, else on a GPU or the CPU.

Layouts are PyTorch's (NCHW activations, OIHW filters). Everything runs under XLA, which takes any
layout, so convolutions keep NCHW and only the filter is transposed to TensorFlow's HWIO (XLA folds
that into the convolution); pools run channels-last between transposes that XLA cancels.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ..ir.errors import ShipeiError
from ..ir.graph import Graph, Node
from ..ir.types import LOW_PRECISION, DType, Sym
from .module import GeneratedModule, ModuleNames, write_module
from .writer import (
    Code,
    Emit,
    Target,
    attention,
    called_helpers,
    computed_in,
    hoisted_constants,
    is_global_average,
    nan_kept,
    pair,
    param_path,
    prefixed_params,
    py_literal,
    reduce_args,
)


def _spatial_pads(padding: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """tf.pad amounts for NCHW: nothing on N and C, `padding` on each side of H and W."""
    ph, pw = pair(padding)
    return (0, 0), (0, 0), (ph, ph), (pw, pw)


def _gelu(e: Emit, node: Node) -> str:
    return f"tf.nn.gelu({e.arg(node, 0)}, approximate={node.attrs['approximate'] == 'tanh'!r})"


def _order(fn: str):
    """lt/le/gt/ge; TensorFlow does not order bools, so those compare as int8 (False < True, as numpy)."""

    def rule(e: Emit, node: Node) -> str:
        a, b = e.args(node)
        if node.operands[0].dtype is DType.bool:
            a, b = f"tf.cast({a}, tf.int8)", f"tf.cast({b}, tf.int8)"
        return f"tf.{fn}({a}, {b})"

    return rule


def _conv2d(e: Emit, node: Node) -> str:
    x, w, *bias = e.args(node)
    pads = _spatial_pads(node.attrs["padding"])
    padding = '"VALID"' if not any(map(any, pads)) else repr(pads)
    y = (f"tf.nn.conv2d({x}, tf.transpose({w}, (2, 3, 1, 0)), strides={pair(node.attrs['stride'])!r}, "
         f"padding={padding}, dilations={pair(node.attrs['dilation'])!r}, data_format=\"NCHW\")")
    return f"tf.nn.bias_add({y}, {bias[0]}, data_format=\"NCHW\")" if bias else y


def _pool(kind: str):
    """Pools channels-last over explicitly padded input (-inf for max, 0 for avg): TensorFlow's own
    padding modes are "SAME"/"VALID", not PyTorch's symmetric amounts. XLA's reduce_window is
    fastest in NHWC and fuses there with its neighbours; the transposes cancel against those XLA
    puts around its NHWC convolutions (the example CNN: 1.08x the hand-written NHWC program's time
    with NCHW pools, 1.03x with these)."""

    def rule(e: Emit, node: Node) -> str:
        x = e.arg(node, 0)
        if kind == "avg" and is_global_average(node):
            return f"tf.reduce_mean({x}, axis=(2, 3), keepdims=True)"
        kernel, stride = pair(node.attrs["kernel"]), pair(node.attrs["stride"])
        ph, pw = pair(node.attrs["padding"])
        pads = ((0, 0), (ph, ph), (pw, pw), (0, 0))  # NHWC
        if kind == "avg" and not node.attrs["count_include_pad"] and any(map(any, pads)):
            return f"avg_pool2d_excluding_padding({x}, {kernel!r}, {stride!r}, {pads!r})"
        x = f"tf.transpose({x}, (0, 2, 3, 1))"
        if any(map(any, pads)):
            fill = 'float("-inf")' if kind == "max" else "0"
            x = f"tf.pad({x}, {pads!r}, constant_values={fill})"
        return f'tf.transpose(tf.nn.{kind}_pool2d({x}, {kernel!r}, {stride!r}, "VALID"), (0, 3, 1, 2))'

    return rule


def _reduce(fn: str):
    def rule(e: Emit, node: Node) -> str:
        return f"tf.{fn}({e.arg(node, 0)}{reduce_args(node)})"

    return rule


def _extremum(fn: str):
    """tf.reduce_max or tf.reduce_min, NaN where the elements reduced hold one: XLA:CPU runs a large
    reduction on YNNPACK, whose max and min skip NaN (found on 16x32x32 per row)."""
    return nan_kept(_reduce(fn), "tf.where(tf.reduce_any(tf.math.is_nan({x}){args}), "
                                 "tf.constant(float('nan'), {dtype}), {reduced})")


def _layer_norm(e: Emit, node: Node) -> str:
    axes = tuple(range(-node.operands[1].type.rank, 0))
    return f"layer_norm({', '.join(e.args(node))}, axes={axes!r}, eps={node.attrs['eps']!r})"


def _linear(e: Emit, node: Node) -> str:
    x, w, *bias = e.args(node)
    y = (f"tf.matmul({x}, {w}, transpose_b=True)" if node.operands[0].type.rank == 2
         else f"tf.tensordot({x}, {w}, [[-1], [1]])")
    return f"{y} + {bias[0]}" if bias else y


def _attention(e: Emit, node: Node) -> str:
    return attention(e, node, "tf.matmul({q}, {k}, transpose_b=True) * {scale}",
                     "tf.where(tf.range({source})[None, :] <= tf.range({length})[:, None], {scores}, {fill})",
                     "tf.matmul(tf.nn.softmax({scores}, axis=-1), {v})")


def _split(e: Emit, node: Node) -> str:
    # tf.split returns a list even for one piece; the body unpacks one name per result.
    suffix = "[0]" if len(node.results) == 1 else ""
    return f"tf.split({e.arg(node, 0)}, {node.attrs['sizes']!r}, axis={node.attrs['axis']}){suffix}"


def _slice(e: Emit, node: Node) -> str:
    shape = node.operands[0].shape
    index = [":"] * len(shape)
    for axis, start, stop, step in zip(*(node.attrs[k] for k in ("axes", "starts", "stops", "steps")), strict=True):
        # Sliced dims are static (the type rule says so); a stop past the end, such as the IR's
        # 2**62 "to the end", is written as an open slice.
        stop_text = "" if stop >= shape[axis] else str(stop)
        index[axis] = f"{start or ''}:{stop_text}" + (f":{step}" if step != 1 else "")
    return f"{e.arg(node, 0)}[{', '.join(index)}]"


def _pad(e: Emit, node: Node) -> str:
    pads = node.attrs["pads"]
    pairs = tuple((pads[2 * i], pads[2 * i + 1]) for i in range(len(pads) // 2))
    dtype = node.results[0].dtype
    # numpy converts the fill to the array's dtype (truncating for ints); tf.pad wants it in that dtype.
    value = node.attrs["value"] if dtype.is_float else np.asarray(node.attrs["value"]).astype(dtype.numpy).item()
    if not pairs:
        return e.arg(node, 0)  # a 0-d tensor has nothing to pad
    return f"tf.pad({e.arg(node, 0)}, {pairs!r}, constant_values={py_literal(value)})"


def _iota(e: Emit, node: Node) -> str:
    length, dtype = e.dim(node.attrs["length"]), node.attrs["dtype"]
    if dtype in LOW_PRECISION:  # no 16-bit range kernels; the cast rounds as numpy's arange does
        return f"tf.cast(tf.range({length}), {e.dtype(dtype)})"
    return f"tf.range({length}, dtype={e.dtype(dtype)})"


RULES = {
    **{name: f"tf.{fn}({{0}})" for name, fn in {
        "abs": "abs", "exp": "exp", "log": "math.log", "sqrt": "sqrt", "rsqrt": "math.rsqrt", "sin": "sin",
        "cos": "cos", "tanh": "tanh", "erf": "math.erf", "floor": "floor", "sigmoid": "sigmoid",
        "relu": "nn.relu", "silu": "nn.silu", "logical_not": "logical_not"}.items()},
    "neg": "-{0}",
    "gelu": _gelu,
    "dropout": "tf.identity({0})",  # the identity at inference
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "pow": "tf.pow({0}, {1})",
    "maximum": "tf.maximum({0}, {1})", "minimum": "tf.minimum({0}, {1})",
    "eq": "tf.equal({0}, {1})", "ne": "tf.not_equal({0}, {1})",
    "lt": _order("less"), "le": _order("less_equal"), "gt": _order("greater"), "ge": _order("greater_equal"),
    "logical_and": "tf.logical_and({0}, {1})", "logical_or": "tf.logical_or({0}, {1})",
    "where": "tf.where({0}, {1}, {2})",
    "cast": "tf.cast({0}, {dtype})",  # float to int truncates and float to bool is x != 0, as numpy
    "matmul": "tf.matmul({0}, {1})",
    "linear": _linear,
    "attention": _attention,
    "conv2d": _conv2d,
    "max_pool2d": _pool("max"),
    "avg_pool2d": _pool("avg"),
    "reduce_sum": _reduce("reduce_sum"), "reduce_mean": _reduce("reduce_mean"),
    "reduce_max": _extremum("reduce_max"), "reduce_min": _extremum("reduce_min"),
    "softmax": "tf.nn.softmax({0}, axis={axis})", "log_softmax": "tf.nn.log_softmax({0}, axis={axis})",
    "layer_norm": _layer_norm,
    "batch_norm": "batch_norm({args}, eps={eps})",
    "reshape": "tf.reshape({0}, {shape})",
    "transpose": "tf.transpose({0}, {perm})",
    "broadcast_to": "tf.broadcast_to({0}, {shape})",
    "concat": "tf.concat([{args}], axis={axis})",
    "split": _split,
    "slice": _slice,
    "gather": "tf.gather({0}, {1}, axis={axis})",
    "pad": _pad,
    "iota": _iota,
    "constant": "",  # constants are made once, in __init__; see _write_model
}
#: Ops that TensorFlow spells as several steps, each of which would round in 16 bits, and those
#: whose 16-bit kernels are not correctly rounded (float16 sigmoid and rsqrt: 1425 and 1117 of
#: 4001 sample points 1 ulp off, which a layer norm of nearly equal values amplifies past tolerance).
for _op in ("gelu", "silu", "softmax", "log_softmax", "layer_norm", "batch_norm", "avg_pool2d", "attention", "linear",
            "sigmoid", "rsqrt"):
    RULES[_op] = computed_in(RULES[_op], LOW_PRECISION, DType.f32, "tf.cast({x}, {dtype})")

#: Module-level helpers for ops that take more than one expression, written only where called.
HELPERS = {
    "avg_pool2d_excluding_padding": '''
def avg_pool2d_excluding_padding(x, kernel, stride, pads):
    """PyTorch's avg_pool2d(count_include_pad=False) on NCHW `x`, pooled channels-last (`pads`
    NHWC): each window's mean over the input cells it covers."""
    def window_mean(t):
        return tf.nn.avg_pool2d(tf.pad(t, pads), kernel, stride, "VALID")
    x = tf.transpose(x, (0, 2, 3, 1))
    return tf.transpose(window_mean(x) / window_mean(tf.ones_like(x[:1, :, :, :1])), (0, 3, 1, 2))
''',
    "layer_norm": '''
def layer_norm(x, weight, bias, axes, eps):
    """Normalize over the trailing `axes`, which weight and bias cover (PyTorch's LayerNorm)."""
    mean, var = tf.nn.moments(x, axes, keepdims=True)
    return (x - mean) / tf.sqrt(var + eps) * weight + bias
''',
    "batch_norm": '''
def batch_norm(x, mean, var, weight, bias, eps):
    """Inference batch norm with running statistics, one per channel on axis 1: one multiply-add
    per element, the per-channel scale and shift computed once."""
    shape = (-1,) + (1,) * (x.shape.rank - 2)
    scale = weight * tf.math.rsqrt(var + eps)
    return x * tf.reshape(scale, shape) + tf.reshape(bias - mean * scale, shape)
''',
}

_RUNTIME = '''
# TensorFlow's XLA on CPU defaults to a max/min that can drop NaNs; TensorFlow's own kernels, numpy and
# PyTorch propagate them. XLA reads its flags at the first compilation in a process.
if "xla_cpu_enable_fast_min_max" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_fast_min_max=false"

_DEVICES = {{"gpu": "/GPU:0", "cpu": "/CPU:0"}}
_tpu_strategy = None  # made once: a process initializes its TPU system only once


def _tpu_resolver():
    """The resolver of a TPU attached to this VM or named by $TPU_NAME, else None.

    Without either it fails fast, without network calls, so asking is cheap.
    """
    try:
        attached = bool(tf.config.list_physical_devices("TPU"))
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local" if attached else None)
    except Exception:  # no TPU here, or one that cannot be resolved: either way, not available
        return None


def available_devices():
    """Devices this machine offers, preferred first."""
    tpu = ["tpu"] if _tpu_resolver() is not None else []
    gpu = ["gpu"] if tf.config.list_logical_devices("GPU") else []
    return tpu + gpu + ["cpu"]


def _strategy():
    """Connect to the TPU and initialize it, as TensorFlow's TPU guide does, then TPUStrategy."""
    global _tpu_strategy
    if _tpu_strategy is None:
        resolver = _tpu_resolver()
        if resolver is None:
            raise RuntimeError("no TPU found")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        _tpu_strategy = tf.distribute.TPUStrategy(resolver)
    return _tpu_strategy


def load(weights=WEIGHTS, device="cpu"):
    """The model with weights from a .safetensors path or a name -> array mapping, on `device`."""
    arrays = checked_weights(weights)
    with _strategy().scope() if device == "tpu" else tf.device(_DEVICES[device]):
        model = {name}()
        for key, variable in model.params.items():
            variable.assign(arrays[key])
    return model


def call(model, *tensors, device="cpu"):
    """Tensors in, a tuple of tensors out: a pipeline stage's step, with no numpy in between."""
    if device == "tpu":
        # Every TPU core runs the same call on the same inputs; one core's results are the answer.
        strategy = _strategy()
        outputs = strategy.experimental_local_results(strategy.run(model.__call__, args=tensors))[0]
    else:
        with tf.device(_DEVICES[device]):
            outputs = _traced_call(model)(*tensors)
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _traced_call(model):
    """The model's __call__ as the one concrete function its input signature makes, called
    directly: tf.function's dispatch binds the arguments to the signature again on every call,
    which cost the example MLP 100 us of its 0.57 ms. Kept on the model (a reference cycle, which
    the garbage collector frees with it)."""
    traced = getattr(model, "_traced", None)
    if traced is None:
        traced = model._traced = model.__call__.get_concrete_function()
    return traced


def accept(x, device="cpu"):
    """Another framework's tensor (anything with __dlpack__) or a numpy array, as a tf tensor, and
    whether it was copied: DLPack hands over the same memory; what it cannot carry (a strided view)
    is copied through numpy. TF's eager kernels abort the process on memory that is not 64-byte
    aligned (MindSpore's results never are); the model's XLA-compiled call takes it, and that is
    the only use a pipeline makes of what it accepts. But XLA's compiled gradients crashed on it
    (found by the random-graph gradient test), so an unaligned numpy array is copied."""
    with tf.device(_DEVICES.get(device, "/CPU:0")):
        if isinstance(x, np.ndarray) and x.ctypes.data % 64:
            return tf.convert_to_tensor(x), True
        try:
            return tf.experimental.dlpack.from_dlpack(x.__dlpack__()), False
        except (AttributeError, TypeError, RuntimeError, BufferError, tf.errors.InvalidArgumentError):
            return tf.convert_to_tensor(np.asarray(x)), True


def export(tensor):
    """A result as other frameworks take it: tf tensors speak DLPack themselves."""
    return tensor


def gradients(model, *tensors):
    """The outputs (the loss, a scalar, first) and the loss's gradient by each trainable param,
    name -> tensor, by tf.GradientTape: what a train step takes."""
    if model not in _GRADIENTS:  # compiled by XLA, which also takes memory TF's kernels would refuse
        _GRADIENTS[model] = tf.function(functools.partial(_gradients, model), jit_compile=True, autograph=False)
    return _GRADIENTS[model](*tensors)


_GRADIENTS = weakref.WeakKeyDictionary()  # model -> its compiled gradients


def _gradients(model, *tensors):
    trained = parameters(model)
    with tf.GradientTape() as tape:  # over the Python body: TF crashed differentiating the compiled call
        outputs = model.forward(*tensors)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    grads = tape.gradient(outputs[0], list(trained.values()), unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return outputs, {{key: tf.convert_to_tensor(grad) for key, grad in zip(trained, grads)}}  # IndexedSlices too


def train_step(model, update, state, scalars, *tensors):
    """One optimizer step on one batch, compiled by XLA as one program (one per model and
    optimizer): the loss's gradients by tf.GradientTape, then `update` (the optimizer's own
    generated program, `as_function` of its module) on the params and the gradients each as one
    flat vector, its new values assigned to the params. The inputs are tensors or numpy arrays.
    The outputs (the loss first) and the optimizer's new state."""
    args = (*state, tf.convert_to_tensor(np.stack(scalars)), *(tf.convert_to_tensor(x) for x in tensors))
    # one concrete function per signature, looked up here: tf.function's own dispatch over six or
    # more arguments costs as much as the MLP's whole step
    key = (update, len(state), *((tuple(arg.shape), arg.dtype) for arg in args))
    steps = _TRAIN_STEPS.setdefault(model, {{}})
    if key not in steps:
        step = functools.partial(_train_step, model, update, len(state))
        steps[key] = tf.function(step, jit_compile=True, autograph=False).get_concrete_function(*args)
    return steps[key](*args)


_TRAIN_STEPS = weakref.WeakKeyDictionary()  # model -> (optimizer, signature) -> compiled train step


def _train_step(model, update, slots, *args):
    state, scalars, tensors = args[:slots], tf.unstack(args[slots]), args[slots + 1:]
    trained = parameters(model)
    with tf.GradientTape() as tape:
        outputs = model.forward(*tensors)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    grads = tape.gradient(outputs[0], list(trained.values()), unconnected_gradients=tf.UnconnectedGradients.ZERO)
    new = update(_flat(trained.values()), _flat(tf.convert_to_tensor(grad) for grad in grads), *state, *scalars)
    new = new if isinstance(new, tuple) else (new,)
    at = 0
    for variable in trained.values():
        size = variable.shape.num_elements()
        variable.assign(tf.reshape(new[0][at:at + size], variable.shape))
        at += size
    return outputs, new[1:]


def _flat(tensors):
    return tf.concat([tf.reshape(tensor, [-1]) for tensor in tensors], 0)


def as_function(model):
    """This program as a function of tensors, for another program's train step to call."""
    return model


def parameters(model):
    """The trainable params, name -> variable."""
    return {{key: value for key, value in model.params.items() if value.trainable}}


def assign(model, values):
    """Write new values (name -> tensor) over params and buffers: a train step's update."""
    for key, value in values.items():
        model.params[key].assign(value)


def to_numpy(tensor):
    return (tf.cast(tensor, tf.float32) if tensor.dtype == tf.bfloat16 else tensor).numpy()


def run(model, inputs, device="cpu"):
    """Numpy in, numpy out (bfloat16 comes back as float32, which numpy has)."""
    return [to_numpy(y) for y in call(model, *(tf.convert_to_tensor(x) for x in inputs), device=device)]
'''

#: Run as a script, the program keeps TensorFlow's info and warning logs (XLA's service, CPU
#: features) off the terminal unless `--verbose` is given; TensorFlow reads the setting once, when
#: it is imported. Imported as a module, it changes nothing.
_QUIET = '''
if __name__ == "__main__" and "--verbose" not in sys.argv:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
'''

TARGET = Target(
    name="tf", framework="tensorflow", extra="tf",
    std_imports=("import functools", "import sys", "import weakref"),
    preamble=_QUIET,
    imports=("import tensorflow as tf",),
    runtime_code=_RUNTIME,
    shape_of="tf.shape({x})[{axis}]",
    dtypes={DType.f16: "tf.float16", DType.bf16: "tf.bfloat16", DType.f32: "tf.float32",
            DType.f64: "tf.float64", DType.i32: "tf.int32", DType.i64: "tf.int64", DType.bool: "tf.bool"},
    rules=RULES,
    helpers=tuple(HELPERS.values()),
    autocast={DType.bf16: {"compute_dtype": "bf16"}},
)

#: compute_dtype option -> the dtype float32 matmul, linear and convolution are computed in.
COMPUTE_DTYPES = {"bf16": DType.bf16}
_MIXED_PRECISION_OPS = ("matmul", "linear", "conv2d")


def emit(graph: Graph, source: str, *, compute_dtype: str | None = None) -> GeneratedModule:
    """The standalone TensorFlow program for `graph`. `compute_dtype="bf16"` computes float32
    matmul, linear and convolution in bfloat16 (operands cast to it, the result back), as Keras's
    "mixed_bfloat16" policy does: mixed precision, for training too."""
    if compute_dtype is None:
        return write_module(TARGET, graph, source, _write_model)
    if compute_dtype not in COMPUTE_DTYPES:
        raise ShipeiError(f"tf: compute_dtype must be None or one of {', '.join(COMPUTE_DTYPES)}, "
                          f"got {compute_dtype!r}")
    low = {op: computed_in(RULES[op], frozenset({DType.f32}), COMPUTE_DTYPES[compute_dtype], "tf.cast({x}, {dtype})")
           for op in _MIXED_PRECISION_OPS}
    target = dataclasses.replace(TARGET, rules={**RULES, **low})
    return write_module(target, graph, source, functools.partial(_write_model, target=target))


def _constant_literal(e: Emit, node: Node) -> str:
    """`tf.constant(...)` holding what numpy's conversion to the constant's dtype holds."""
    dtype = node.attrs["dtype"]
    value = node.attrs["value"]
    if not dtype.is_float:  # numpy's conversion (float to int truncates); tf.constant refuses lossy ones
        value = np.asarray(value).astype(dtype.numpy)
    return f"tf.constant({e.literal('constant', 'value', value)}, {e.dtype(dtype)})"


def _write_model(code: Code, graph: Graph, module: ModuleNames, emit_body, target: Target = TARGET) -> None:
    model = Code()
    _write_class(model, graph, module, emit_body, target)
    for helper in called_helpers(HELPERS.values(), model):
        code(*helper.strip("\n").splitlines(), "", "")
    code(*model.lines)


def _write_class(code: Code, graph: Graph, module: ModuleNames, emit_body, target: Target) -> None:
    names = module.names
    constants: dict[Node, str] = {}
    for p in graph.params:
        param_path(p)  # validates the name; it reaches the code only as a repr'd key
    e = Emit(target, graph, names, lambda v: f"self.params[{v.name!r}]", lambda node: f"self.{constants[node]}")
    e.layer_ref = prefixed_params("self.params")
    with code.block(f"class {module.model}(tf.Module):"):
        with code.block("def __init__(self):"):
            code(f"super().__init__(name={module.model!r})")
            if graph.params:
                code("# Keyed by the DSL's dotted names, as in the weights file; `load` assigns the values.")
                with code.block("self.params = {"):
                    for p in graph.params:
                        zeros = f"tf.zeros({tuple(p.shape)!r}, {e.dtype(p.dtype)})"
                        frozen = ", trainable=False" if p.param.buffer else ""
                        code(f"{p.name!r}: tf.Variable({zeros}{frozen}, name={p.name!r}),")
                code("}")
            else:
                code("self.params = {}")
            constants.update(hoisted_constants(graph, names, "const"))
            for node, name in constants.items():
                code(f"self.{name} = {_constant_literal(e, node)}")
        code("")
        inputs = [names.fresh(v.name) for v in graph.inputs]
        for v, n in zip(graph.inputs, inputs, strict=True):
            e.values[v] = n
        with code.block("@tf.function(jit_compile=True, autograph=False, input_signature=["):
            for v in graph.inputs:
                shape = tuple(None if isinstance(d, Sym) else d for d in v.shape)
                code(f"tf.TensorSpec({shape!r}, {e.dtype(v.dtype)}, name={v.name!r}),")
        code("])")
        with code.block(f"def __call__({', '.join(['self', *inputs])}):"):
            code(f"return self.forward({', '.join(inputs)})")
        code("")
        # forward itself is not compiled: a train step differentiates it inside its own XLA program
        # (XLA compiled a step differentiating the compiled __call__ anew on every call)
        with code.block(f"def forward({', '.join(['self', *inputs])}):"):
            e.bind_symbols(code, inputs)
            emit_body(e, code)
            code(f"return {', '.join(e.values[v] for v in graph.outputs)}")
