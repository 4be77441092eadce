"""The tf target: one module run at several batch sizes, NaN semantics under XLA, the module
contract (weights, devices, the TPU code path). Every op x dtype is in
test_ops_all_targets.py."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from shipei.codegen.tf import emit  # noqa: E402
from shipei.ir.errors import ShipeiError  # noqa: E402
from shipei.ir.graph import Builder, Graph, Init  # noqa: E402
from shipei.ir.interpreter import interpret  # noqa: E402
from shipei.ir.tolerance import MIXED_PRECISION, compare  # noqa: E402
from shipei.ir.types import DType, Sym, TensorType, dim_mul  # noqa: E402
from shipei.runtime.executable import Executable, import_module_file  # noqa: E402

import shipei  # noqa: E402

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


def test_calls_go_to_the_traced_function_which_is_freed_with_its_model(tmp_path: Path) -> None:
    """`call` calls the model's concrete function itself, past tf.function's dispatch, and keeps
    it on the model: a cycle the garbage collector frees, so a model loaded again and again (new
    weights) does not keep the old ones alive."""
    graph, weights = _symbolic()
    module = _module(graph, tmp_path)
    model = module.load(weights, "cpu")
    xs = [np.ones((3, 6), np.float32)]
    _check(graph, module.run(model, xs, "cpu"), interpret(graph, xs, weights, precision="f64"), "traced call")
    assert isinstance(model._traced, type(model.__call__.get_concrete_function()))
    freed = weakref.ref(model)
    del model
    gc.collect()
    assert freed() is None


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


def test_bf16_compute_runs_matmuls_in_bfloat16_within_mixed_precision_tolerance() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "mlp.sp"
    full, mixed = (shipei.compile(example, "tf", options=options) for options in ({}, {"compute_dtype": "bf16"}))
    assert mixed.source.count("tf.bfloat16)") > full.source.count("tf.bfloat16)")  # the casts around matmuls
    x = np.random.default_rng(0).standard_normal((4, 784)).astype(np.float32)
    (want,), (got,) = (c.load(device="cpu").run(x) for c in (full, mixed))
    assert got.dtype == np.float32 and not np.array_equal(got, want)  # bfloat16 is in effect
    assert compare(got, want, DType.f32, MIXED_PRECISION).ok
    with pytest.raises(ShipeiError, match="tf: compute_dtype must be None or one of bf16, got 'f16'"):
        shipei.compile(example, "tf", options={"compute_dtype": "f16"})
