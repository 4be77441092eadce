"""The jax target: the options a TPU user needs (bf16 compute, matmul precision, batch padding),
the module contract. Every op x dtype is in test_ops_all_targets.py."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import ModuleType

import jax
import numpy as np
import pytest
from shipei.codegen.jax import TARGET, emit
from shipei.ir.errors import ShipeiError
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.interpreter import interpret
from shipei.ir.samples import build, inputs, samples
from shipei.ir.tolerance import compare
from shipei.ir.types import DType, Sym, TensorType
from shipei.runtime.executable import Executable, import_module_file

B = Sym.named("B")
_PROGRAMS = tempfile.TemporaryDirectory(prefix="shipei-jax-")  # removed when the session ends


def _module(graph: Graph, **options) -> ModuleType:
    generated = emit(graph, "test.sp", **options)
    path = Path(tempfile.mkdtemp(dir=_PROGRAMS.name)) / generated.filename
    path.write_text(generated.source)
    return import_module_file(path)


def _run(graph: Graph, xs: list[np.ndarray], weights: dict | None = None, **options) -> list[np.ndarray]:
    module = _module(graph, **options)
    return module.run(module.load(weights or {}, "cpu"), xs, "cpu")


def _supported(graph: Graph) -> bool:
    return all(TARGET.supports(n.op, v.dtype) for n in graph.nodes for v in n.operands + n.results)


# -- options ------------------------------------------------------------------------------------

def _net() -> tuple[Graph, dict[str, np.ndarray]]:
    """A dense layer and a conv, both with batch dim B: what the options act on."""
    g = Graph("Net")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (B, 16)))
    img = b.input("img", TensorType(DType.f32, (B, 3, 6, 6)))
    w = b.add_param("fc.weight", TensorType(DType.f32, (16, 8)), Init("normal"))
    k = b.add_param("conv.weight", TensorType(DType.f32, (4, 3, 3, 3)), Init("normal"))
    g.outputs = [b("tanh", b("matmul", x, w)), b("conv2d", img, k, padding=(1, 1))]
    rng = np.random.default_rng(1)  # weights scaled by 1/sqrt(fan_in), as initializers do
    return g, {"fc.weight": (rng.standard_normal((16, 8)) / 4).astype(np.float32),
               "conv.weight": (rng.standard_normal((4, 3, 3, 3)) / np.sqrt(27)).astype(np.float32)}


def _net_inputs(batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    return [rng.standard_normal(shape).astype(np.float32) for shape in ((batch, 16), (batch, 3, 6, 6))]


def test_bf16_compute_accumulates_in_f32_within_bf16_tolerance() -> None:
    graph, weights = _net()
    xs = _net_inputs(3)
    module = _module(graph, compute_dtype="bf16")
    params = module.load(weights, "cpu")
    jaxpr = str(jax.make_jaxpr(module.forward)(params, *xs))
    assert "bf16[3,16]" in jaxpr and "preferred_element_type=float32" in jaxpr
    actual = module.run(params, xs, "cpu")
    full = _run(graph, xs, weights)
    # Exactly the reference on bf16-rounded operands, to float32 accuracy (the sums are float32) ...
    bf16 = DType.bf16.numpy
    rounded = interpret(graph, [x.astype(bf16) for x in xs], {k: w.astype(bf16) for k, w in weights.items()},
                        precision="f64")
    for y, f, r, e in zip(actual, full, rounded, interpret(graph, xs, weights, precision="f64"), strict=True):
        assert y.dtype == np.float32
        assert compare(y, r, DType.f32).ok
        # ... so within bf16's relative tolerance of the float32 model, measured against its scale
        assert np.abs(y - e).max() <= 1.6e-2 * np.abs(e).max()
        assert not np.array_equal(y, f), "bf16 compute should differ from float32 compute"


@pytest.mark.parametrize("precision", ["default", "high", "highest"])
def test_matmul_precision_reaches_every_dot_and_conv(precision: str) -> None:
    graph, weights = _net()
    module = _module(graph, matmul_precision=precision)
    assert module.PRECISION is getattr(jax.lax.Precision, precision.upper())
    params = module.load(weights, "cpu")
    xs = _net_inputs(2)
    jaxpr = str(jax.make_jaxpr(module.forward)(params, *xs))
    assert jaxpr.count(f"Precision.{precision.upper()}") == 4  # (lhs, rhs) of the dot and the conv
    if precision == "highest":
        for y, r in zip(module.run(params, xs, "cpu"), interpret(graph, xs, weights, precision="f64"), strict=True):
            assert compare(y, r, DType.f32).ok


@pytest.mark.parametrize("options", [{"compute_dtype": "f16"}, {"matmul_precision": "fast"}, {"pad_to": 0}])
def test_bad_options_fail_at_compile_time(options: dict) -> None:
    with pytest.raises(ShipeiError, match=next(iter(options))):
        emit(_net()[0], "test.sp", **options)


def test_pad_to_pads_the_batch_and_gives_the_same_results() -> None:
    graph, weights = _net()
    padded = _module(graph, pad_to=8)
    assert padded.PAD_TO == 8
    xs = _net_inputs(3)
    inputs_8, batch = padded.pad_batch(xs)
    assert batch == 3 and [x.shape[0] for x in inputs_8] == [8, 8]
    assert np.array_equal(inputs_8[0][3:], np.repeat(xs[0][-1:], 5, axis=0)), "padding repeats the last row"
    actual = padded.run(padded.load(weights, "cpu"), xs, "cpu")
    for y, e in zip(actual, _run(graph, xs, weights), strict=True):
        # Padded rows never reach real ones; only XLA's kernel choice for the bigger shape may round differently.
        assert y.shape == e.shape
        np.testing.assert_allclose(y, e, rtol=1e-6, atol=0)
    assert [x.shape[0] for x in padded.pad_batch(_net_inputs(8))[0]] == [8, 8]


def _batch_mixing(op: str) -> Graph:
    g = Graph("Mix")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (B, 4)))
    g.outputs = [{"reduce_sum": lambda: b("reduce_sum", x, axes=(0,)),
                  "softmax": lambda: b("softmax", x, axis=0),
                  "concat": lambda: b("concat", x, x, axis=0),
                  "reshape": lambda: b("reshape", x, shape=(4, B)),
                  "matmul": lambda: b("matmul", b("transpose", x, perm=(1, 0)), x)}[op]()]
    return g


@pytest.mark.parametrize("op", ["reduce_sum", "softmax", "concat", "reshape", "matmul"])
def test_pad_to_refuses_graphs_that_mix_batch_rows(op: str) -> None:
    with pytest.raises(ShipeiError, match="pad_to"):
        emit(_batch_mixing(op), "test.sp", pad_to=8)


def test_pad_to_needs_a_symbolic_batch_dim() -> None:
    graph = build("relu", samples("relu")[0], DType.f32)
    with pytest.raises(ShipeiError, match="needs a batch dim"):
        emit(graph, "test.sp", pad_to=8)


# -- the module contract, through the generic runtime ---------------------------------------------

def test_devices_and_64_bit_weights_through_the_runtime(tmp_path: Path) -> None:
    import safetensors.numpy

    g = Graph("Wide")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f64, (B, 3)))
    w = b.add_param("w", TensorType(DType.f64, (3, 2)), Init("normal"))
    idx = b("iota", length=B, dtype=DType.i64)
    g.outputs = [b("matmul", x, w), b("add", idx, b("constant", value=np.array(2**40), dtype=DType.i64))]
    weights = {"w": np.random.default_rng(0).standard_normal((3, 2))}
    safetensors.numpy.save_file(weights, str(tmp_path / "wide.safetensors"))
    x64 = jax.config.jax_enable_x64
    generated = emit(g, "test.sp")
    assert "jax.enable_x64(True)" in generated.source and "jax_enable_x64" not in generated.source
    path = tmp_path / generated.filename
    path.write_text(generated.source)
    exe = Executable(g, "jax", path, tmp_path / "wide.safetensors", device="cpu")
    assert exe.module.available_devices()[-1] == "cpu" and exe.device == "cpu"
    xs = np.random.default_rng(1).standard_normal((4, 3))
    y, i = exe(xs)
    assert y.dtype == np.float64 and compare(y, xs @ weights["w"], DType.f64).ok
    assert i.dtype == np.int64 and np.array_equal(i, np.arange(4) + 2**40)
    assert jax.config.jax_enable_x64 == x64, "the generated module must not flip jax's process-wide flag"


def test_bf16_inputs_and_outputs() -> None:
    graph = build("add", samples("add")[0], DType.bf16)
    xs = inputs("add", samples("add")[0], graph)
    (y,) = _run(graph, xs)
    assert y.dtype == np.float32 and np.array_equal(y, (xs[0] + xs[1]).astype(np.float32))


def test_single_piece_split_is_the_tensor() -> None:
    g = Graph("One")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (2, 6)))
    g.outputs = b.op("split", x, sizes=(6,), axis=1)
    assert "    v0 = x\n" in emit(g, "test.sp").source
    xs = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert np.array_equal(_run(g, [xs])[0], xs)
