"""The tf target: one module run at several batch sizes, NaN semantics under XLA, the module
contract (weights, devices, the TPU code path) and a golden program. Every op x dtype is in
test_ops_all_targets.py."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from shipei.codegen.tf import emit  # noqa: E402
from shipei.ir.errors import SourceLoc  # noqa: E402
from shipei.ir.graph import Builder, Graph, Init  # noqa: E402
from shipei.ir.interpreter import interpret  # noqa: E402
from shipei.ir.tolerance import compare  # noqa: E402
from shipei.ir.types import DType, Sym, TensorType, dim_mul  # noqa: E402
from shipei.runtime.executable import Executable, import_module_file  # noqa: E402

B = Sym.named("B")


def _module(graph: Graph, directory: Path) -> ModuleType:
    generated = emit(graph, "test.sp")
    path = directory / generated.filename
    path.write_text(generated.source)
    return import_module_file(path)


def _run(graph: Graph, xs: list[np.ndarray], directory: Path, weights: dict | None = None) -> list[np.ndarray]:
    module = _module(graph, directory)
    return module.run(module.load(weights or {}, "cpu"), xs, "cpu")


def _check(graph: Graph, actual: list[np.ndarray], expected: list[np.ndarray], what: str) -> None:
    for y, r, v in zip(actual, expected, graph.outputs, strict=True):
        assert y.dtype == (np.float32 if v.dtype is DType.bf16 else v.dtype.numpy), f"{what}: output dtype {y.dtype}"
        with np.errstate(invalid="ignore"):  # inf - inf where both are inf: equal, not an error
            mismatch = compare(y, r, v.dtype)
        assert mismatch.ok, f"{what}: {mismatch}"


def _symbolic() -> tuple[Graph, dict[str, np.ndarray]]:
    """Reshape, broadcast and iota on the batch symbol B, including a dim 2*B."""
    g = Graph("Dyn")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (B, 6)))
    w = b.add_param("fc.weight", TensorType(DType.f32, (6, 4)), Init("normal"))
    h = b("reshape", b("matmul", x, w), shape=(B, 2, 2))
    ramp = b("broadcast_to", b("reshape", b("iota", length=B, dtype=DType.f32), shape=(B, 1, 1)), shape=(B, 2, 2))
    g.outputs = [b("reshape", b("add", h, ramp), shape=(dim_mul(2, B), 2)), b("iota", length=B, dtype=DType.i64)]
    return g, {"fc.weight": np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)}


def test_one_module_runs_every_batch_size_without_retracing(tmp_path: Path) -> None:
    graph, weights = _symbolic()
    module = _module(graph, tmp_path)
    assert "tf.TensorSpec((None, 6), tf.float32, name='x')" in emit(graph, "test.sp").source
    model = module.load(weights, "cpu")
    for batch in (2, 5):
        xs = [np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float32)]
        actual = module.run(model, xs, "cpu")
        assert [y.shape for y in actual] == [(2 * batch, 2), (batch,)]
        _check(graph, actual, interpret(graph, xs, weights, precision="f64"), f"batch {batch}")
    assert model.__call__.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("op", ["maximum", "minimum", "reduce_max", "reduce_min", "max_pool2d", "relu"])
def test_nan_propagates_as_in_numpy(op: str, tmp_path: Path) -> None:
    g = Graph("Nan")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (1, 1, 2, 2)))
    g.outputs = [{"maximum": lambda: b("maximum", x, b("transpose", x, perm=(0, 1, 3, 2))),
                  "minimum": lambda: b("minimum", x, b("transpose", x, perm=(0, 1, 3, 2))),
                  "reduce_max": lambda: b("reduce_max", x),
                  "reduce_min": lambda: b("reduce_min", x),
                  "max_pool2d": lambda: b("max_pool2d", x, kernel=(2, 2), stride=(1, 1)),
                  "relu": lambda: b("relu", x)}[op]()]
    xs = [np.array([[[[np.nan, 1.0], [-2.0, 3.0]]]], np.float32)]
    expected = interpret(g, xs, {}, precision="f64")
    assert np.isnan(expected[0]).any()
    _check(g, _run(g, xs, tmp_path), expected, op)


# -- the module contract -------------------------------------------------------------------------

def _bf16_linear() -> tuple[Graph, dict[str, np.ndarray]]:
    g = Graph("Half")
    b = Builder(g)
    x = b.input("x", TensorType(DType.bf16, (B, 3)))
    w = b.add_param("layers.0.weight", TensorType(DType.bf16, (3, 2)), Init("normal"))
    s = b.add_param("layers.0.scale", TensorType(DType.bf16, (2,)), Init("ones"), buffer=True)
    g.outputs = [b("mul", b("matmul", x, w), s)]
    rng = np.random.default_rng(0)
    return g, {"layers.0.weight": rng.standard_normal((3, 2)).astype(DType.bf16.numpy),
               "layers.0.scale": rng.standard_normal(2).astype(DType.bf16.numpy)}


def test_weights_file_devices_and_bf16_through_the_runtime(tmp_path: Path) -> None:
    import safetensors.numpy

    graph, weights = _bf16_linear()
    safetensors.numpy.save_file(weights, str(tmp_path / "half.safetensors"))
    path = tmp_path / emit(graph, "test.sp").filename
    path.write_text(emit(graph, "test.sp").source)
    exe = Executable(graph, "tf", path, tmp_path / "half.safetensors", device="cpu")
    devices = exe.module.available_devices()
    assert devices[-1] == "cpu" and set(devices) <= {"tpu", "gpu", "cpu"} and exe.device == "cpu"
    assert [v.trainable for v in exe._model.params.values()] == [True, False], "a buffer is not trainable"
    xs = np.random.default_rng(1).standard_normal((4, 3)).astype(DType.bf16.numpy)
    y = exe(xs)
    assert y.dtype == DType.bf16.numpy
    _check(graph, [y.astype(np.float32)], interpret(graph, [xs], weights, precision="f64"), "bf16 linear")


def test_load_rejects_weights_that_do_not_match(tmp_path: Path) -> None:
    graph, weights = _bf16_linear()
    module = _module(graph, tmp_path)
    with pytest.raises(ValueError, match="layers.0.scale"):
        module.load({"layers.0.weight": weights["layers.0.weight"]}, "cpu")
    with pytest.raises(ValueError):
        module.load({**weights, "layers.0.scale": np.ones(3, DType.bf16.numpy)}, "cpu")


def test_tpu_code_path_with_a_stand_in_strategy(tmp_path: Path) -> None:
    """No TPU here: a one-device strategy takes TPUStrategy's place, so that the strategy scope,
    `strategy.run` and the per-replica results are exercised; only the TPU initialization is not."""
    graph, weights = _symbolic()
    module = _module(graph, tmp_path)
    module._tpu_strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    model = module.load(weights, "tpu")
    assert all(module._tpu_strategy.extended.variable_created_in_scope(v) for v in model.params.values())
    xs = [np.random.default_rng(3).standard_normal((3, 6)).astype(np.float32)]
    _check(graph, module.run(model, xs, "tpu"), interpret(graph, xs, weights, precision="f64"), "tpu path")


def test_constants_and_pad_values_take_numpy_conversions(tmp_path: Path) -> None:
    g = Graph("Conv")
    b = Builder(g)
    x = b.input("x", TensorType(DType.i32, (2,)))
    c = b("constant", value=np.array([1.5, -2.7]), dtype=DType.i32)
    f = b.input("f", TensorType(DType.f16, (2,)))
    g.outputs = [b("add", x, c), b("pad", x, pads=(1, 1), value=-1.5),
                 b("constant", value=np.array([0.0, -0.5]), dtype=DType.bool),
                 b("pad", f, pads=(0, 1), value=float("-inf"))]
    xs = [np.array([10, 20], np.int32), np.array([0.5, 2.0], np.float16)]
    expected = interpret(g, xs, {}, precision="f64")
    assert [e.tolist() for e in expected] == [[11, 18], [-1, 10, 20, -1], [False, True], [0.5, 2.0, -np.inf]]
    _check(g, _run(g, xs, tmp_path), expected, "numpy conversions")


# -- golden --------------------------------------------------------------------------------------

GOLDEN = '''\
"""Tiny, generated by shipei from tiny.sp for tensorflow.

Run `python tiny_tf.py` for random inputs; it prints the output
shapes and the device it ran on. Regenerate rather than edit.
"""

import os

import numpy as np
import safetensors.numpy
import tensorflow as tf

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tiny.safetensors')
INPUTS = [  # name, example shape, dtype
    ('x', (2, 3), 'float32'),
]
PARAMS = [  # name, shape, dtype
    ('fc.weight', (3, 4), 'float32'),
]


class Tiny(tf.Module):
    def __init__(self):
        super().__init__(name='Tiny')
        # Keyed by the DSL's dotted names, as in the weights file; `load` assigns the values.
        self.params = {
            'fc.weight': tf.Variable(tf.zeros((3, 4), tf.float32), name='fc.weight'),
        }

    @tf.function(jit_compile=True, autograph=False, input_signature=[
        tf.TensorSpec((None, 3), tf.float32, name='x'),
    ])
    def __call__(self, x):
        B = tf.shape(x)[0]
        # tiny.sp:3  return relu(fc(x))
        v0 = tf.matmul(x, self.params['fc.weight'])
        v1 = tf.nn.relu(v0)
        return v1


# TensorFlow's XLA on CPU defaults to a max/min that can drop NaNs; TensorFlow's own kernels, numpy and
# PyTorch propagate them. XLA reads its flags at the first compilation in a process.
if "xla_cpu_enable_fast_min_max" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_fast_min_max=false"

_DEVICES = {"gpu": "/GPU:0", "cpu": "/CPU:0"}
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
        model = Tiny()
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
            outputs = model(*tensors)
    return outputs if isinstance(outputs, tuple) else (outputs,)


def accept(x, device="cpu"):
    """Another framework's tensor (anything with __dlpack__) or a numpy array, as a tf tensor, and
    whether it was copied: DLPack hands over the same memory; what it cannot carry (a strided view)
    is copied through numpy. TF's eager kernels abort the process on memory that is not 64-byte
    aligned (MindSpore's results never are); the model's XLA-compiled call takes it, and that is
    the only use a pipeline makes of what it accepts."""
    with tf.device(_DEVICES.get(device, "/CPU:0")):
        try:
            return tf.experimental.dlpack.from_dlpack(x.__dlpack__()), False
        except (AttributeError, TypeError, RuntimeError, BufferError, tf.errors.InvalidArgumentError):
            return tf.convert_to_tensor(np.asarray(x)), True


def export(tensor):
    """A result as other frameworks take it: tf tensors speak DLPack themselves."""
    return tensor


def to_numpy(tensor):
    return (tf.cast(tensor, tf.float32) if tensor.dtype == tf.bfloat16 else tensor).numpy()


def run(model, inputs, device="cpu"):
    """Numpy in, numpy out (bfloat16 comes back as float32, which numpy has)."""
    return [to_numpy(y) for y in call(model, *(tf.convert_to_tensor(x) for x in inputs), device=device)]


def checked_weights(weights):
    """Name -> numpy array from a .safetensors path or a mapping, held against PARAMS: the same
    names, shapes and dtypes. An integer may be stored narrower (int8 quantized weights), and is
    widened here; anything else of another dtype is refused, never cast."""
    if isinstance(weights, str):
        weights = safetensors.numpy.load_file(weights)
    arrays = {key: np.asarray(value) for key, value in weights.items()}
    names = {name for name, _, _ in PARAMS}
    if set(arrays) != names:
        raise ValueError(f"weights do not match the model: unexpected {sorted(set(arrays) - names)}, "
                         f"missing {sorted(names - set(arrays))}")
    for name, shape, dtype in PARAMS:
        array = arrays[name]
        narrower = array.dtype.kind in "iu" and dtype.startswith("int") and np.can_cast(array.dtype, dtype)
        if array.shape != shape or (array.dtype.name != dtype and not narrower):
            raise ValueError(f"weight {name!r}: expected {dtype}{list(shape)}, got {array.dtype}{list(array.shape)}")
        arrays[name] = array.astype(dtype) if narrower else array
    return arrays


def example_inputs(seed=0):
    """Random inputs of the declared shapes (shape symbols set to 2)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f"
            else rng.integers(0, 2, shape).astype(dtype) for _, shape, dtype in INPUTS]


if __name__ == "__main__":
    device = available_devices()[0]
    model = load(WEIGHTS, device)
    for output in run(model, example_inputs(), device):
        print(output.shape, output.dtype)
    print("device:", device)
'''


def test_golden_program() -> None:
    g = Graph("Tiny")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (B, 3)))
    w = b.add_param("fc.weight", TensorType(DType.f32, (3, 4)), Init("normal"))
    b.loc = SourceLoc("tiny.sp", 3, 16, "        return relu(fc(x))")
    g.outputs = [b("relu", b("matmul", x, w))]
    assert emit(g, "tiny.sp").source == GOLDEN
