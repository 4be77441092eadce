"""Every differentiable op on every target: the framework's autodiff, through the generated
program's `gradients`, against central finite differences of the reference interpreter in float64.

Each op's first sample is applied to params (its float operands; indices and conditions are
constants), and its results are weighted by random constants and summed: the loss. One program
per target holds every op (the losses added), so each framework compiles once; a mismatch names
the op and its operand. Float64 where the target lowers the op in it, else float32 with a looser
bound. Inputs are drawn in each op's domain, away from the kinks of relu, abs, max and pooling.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from shipei.codegen import capabilities
from shipei.ir.graph import Builder, Graph, Init, Value
from shipei.ir.inputs import in_domain, operand_domains, random_inputs
from shipei.ir.interpreter import interpret
from shipei.ir.registry import all_ops, get_op
from shipei.ir.samples import dtypes_for, samples
from shipei.ir.tolerance import TOLERANCES
from shipei.ir.types import DType, TensorType

import shipei
from shipei.testing import available_targets, graphs

#: Ops with no gradient to check: their results are not floats, or are constant almost everywhere.
NOT_DIFFERENTIABLE = {"floor", "transfer", "constant", "iota"}
#: Operands that are statistics, not trained: buffers, as BatchNorm2d holds them.
BUFFERS = {(op, stat) for op in ("batch_norm", "batch_norm_train") for stat in ("mean", "var")}
EPS = 1e-6


def _differentiable() -> list[str]:
    out = []
    for name, opdef in sorted(all_ops().items()):
        if name in NOT_DIFFERENTIABLE or "comparison" in opdef.traits or not samples(name):
            continue
        sample = samples(name)[0]
        floats = any(d.is_float for d in dtypes_for(name))
        if floats and sample.attrs.get("dtype", DType.f64).is_float and len(sample.shapes) > len(sample.bool_operands):
            out.append(name)
    return out


OPS = _differentiable()


def _dtype(target: str, op: str) -> DType:
    return DType.f64 if DType.f64 in capabilities(target).get(op, ()) else DType.f32


@functools.cache
def _case(op: str, dtype: DType) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray], list[np.ndarray]]:
    """The op's params (float operands) by name, its constant operands by position, and a weight
    per result, drawn from a seed of the op's name."""
    rng = np.random.default_rng(sum(map(ord, op)))
    opdef, sample = get_op(op), samples(op)[0]
    indices, domains = opdef.index_operands(), operand_domains(op)
    params, constants = {}, {}
    for i, shape in enumerate(sample.shapes):
        if i in indices:
            bound = sample.shapes[0][opdef.indexed_axis(sample.attrs, indices[i]) % len(sample.shapes[0])]
            constants[i] = rng.integers(0, bound, shape).astype(np.int64)
        elif i in sample.bool_operands:
            constants[i] = rng.random(shape) < 0.5
        else:
            x = in_domain(rng.normal(0, 1, shape), {domains[i]} if i in domains else set())
            params[f"{op}.x{i}"] = np.where(np.abs(x) < 0.05, 0.05 + np.abs(x), x).astype(dtype.numpy)
    graph, _ = _graph(op, dtype, params, constants, [])
    weights = [rng.normal(size=tuple(int(d) for d in r.shape)).astype(r.dtype.numpy) for r in graph.outputs]
    return params, constants, weights


def _graph(op: str, dtype: DType, params: dict[str, np.ndarray], constants: dict[int, np.ndarray],
           weights: list[np.ndarray], b: Builder | None = None) -> tuple[Graph, Value | None]:
    """The op on params (results as outputs, or, with weights, their weighted sum as the loss)."""
    graph = Graph("Grads") if b is None else b.graph
    b = b or Builder(graph)
    sample = samples(op)[0]
    operands = []
    for i, shape in enumerate(sample.shapes):
        if i in constants:
            value = constants[i]
            operands.append(b("constant", value=value, dtype=DType.i64 if value.dtype.kind == "i" else DType.bool))
        else:
            names = get_op(op).operands
            buffer = (op, names[min(i, len(names) - 1)].lstrip("*")) in BUFFERS
            operands.append(b.add_param(f"{op}.x{i}", TensorType(dtype, shape), Init("zeros"), buffer=buffer))
    results = b.op(op, *operands, **sample.attrs)
    if not weights:
        graph.outputs = results
        return graph, None
    loss = None
    for r, w in zip(results, weights, strict=True):
        term = b("reduce_sum", b("mul", r, b("constant", value=w, dtype=r.dtype)))
        term = term if term.dtype is DType.f64 else b("cast", term, dtype=DType.f64)
        loss = term if loss is None else b("add", loss, term)
    return graph, loss


@functools.cache
def _finite_differences(op: str, dtype: DType) -> dict[str, np.ndarray]:
    """d loss / d param by central differences of the reference, in float64: the graph itself is
    float64 (a float32 param would round a step of EPS away), at the case's values."""
    params, constants, weights = _case(op, dtype)
    params = {k: v.astype(np.float64) for k, v in params.items()}
    graph = Graph("Grads")
    _, loss = _graph(op, DType.f64, params, constants, [w.astype(np.float64) for w in weights], Builder(graph))
    graph.outputs = [loss]

    def f(values: dict[str, np.ndarray]) -> float:
        return float(interpret(graph, [], values, precision="f64")[0])

    grads = {}
    trained = {p.name for p in graph.params if not p.param.buffer}
    for name, value in params.items():
        if name not in trained:
            continue
        grad = np.zeros(value.shape)
        for at in np.ndindex(value.shape):
            up, down = value.astype(np.float64), value.astype(np.float64)
            up[at] += EPS
            down[at] -= EPS
            grad[at] = (f({**params, name: up}) - f({**params, name: down})) / (2 * EPS)
        grads[name] = grad
    return grads


@functools.cache
def _target_gradients(target: str) -> dict[str, np.ndarray]:
    """Every op's params' gradients from one program on `target`."""
    graph = Graph("Grads")
    b = Builder(graph)
    total, weights_in = None, {}
    for op in OPS:
        dtype = _dtype(target, op)
        params, constants, weights = _case(op, dtype)
        _, loss = _graph(op, dtype, params, constants, weights, b)
        total = loss if total is None else b("add", total, loss)
        weights_in.update(params)
    graph.outputs = [total]
    warnings.simplefilter("ignore")
    exe = shipei.compile(graph, target, weights=weights_in, pass_options={"training": True}).load(device="cpu")
    _, grads = exe.module.gradients(exe._model)
    return {k: np.asarray(exe.module.to_numpy(v), np.float64) for k, v in grads.items()}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("target", available_targets())
def test_autodiff_matches_the_references_finite_differences(target: str, op: str) -> None:
    dtype = _dtype(target, op)
    want = _finite_differences(op, dtype)
    got = _target_gradients(target)
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype is DType.f64 else {"rtol": 2e-3, "atol": 2e-4}
    for name, grad in want.items():
        assert name in got, f"{target} gives no gradient for {name}"
        np.testing.assert_allclose(got[name], grad, **tol, err_msg=f"{op} on {target} ({dtype}): d loss / d {name}")


def test_the_check_covers_the_ops_it_should() -> None:
    assert {"matmul", "conv2d", "attention", "layer_norm", "softmax", "cross_entropy", "gather", "where"} <= set(OPS)
    assert not {"eq", "floor", "iota"} & set(OPS)


#: Ops smooth wherever they are defined, with no input domain: finite differences hold anywhere.
SMOOTH = ["add", "sub", "mul", "neg", "tanh", "sigmoid", "sin", "cos", "erf", "matmul", "transpose", "reshape",
          "reduce_sum", "reduce_mean", "softmax", "log_softmax", "gelu", "silu", "layer_norm", "concat", "slice",
          "broadcast_to"]


@pytest.mark.parametrize("target", available_targets())
@settings(max_examples=max(5, settings.default.max_examples // 5))  # ci: 5 per target, long: 200
@given(data=st.data())
def test_random_graphs_gradients_match_the_references_finite_differences(target: str, data: st.DataObject) -> None:
    """As the forward pass is property-tested over random graphs, so is the backward: a drawn f64
    graph of smooth ops, its outputs weighted and summed into a loss, differentiated by the
    target's framework against central differences of the reference interpreter."""
    graph = data.draw(graphs(ops=SMOOTH, dtypes=["f64"], targets=[target], max_nodes=5, symbolic=False))
    trained = [p for p in graph.params if not p.param.buffer]
    assume(trained)
    rng = np.random.default_rng(0)
    weights = {p.name: rng.uniform(-1, 1, tuple(p.shape)) for p in graph.params}
    inputs = random_inputs(graph, 0, scale=1.0)
    b = Builder(graph)
    loss = None
    for out in graph.outputs:
        term = b("reduce_sum", b("mul", out, b("constant", value=rng.normal(size=tuple(out.shape)), dtype=DType.f64)))
        loss = term if loss is None else b("add", loss, term)
    graph.outputs = [loss]
    warnings.simplefilter("ignore")
    exe = shipei.compile(graph, target, weights=weights, pass_options={"training": True}).load(device="cpu")
    (loss,), grads = exe.module.gradients(exe._model, *(exe.module.accept(np.asarray(x), "cpu")[0] for x in inputs))

    def f(values: dict[str, np.ndarray]) -> float:
        return float(interpret(graph, inputs, values, precision="f64")[0])

    tol = TOLERANCES[DType.f64]  # some targets' f64 transcendentals are a few ulps of f32 off
    want_loss = f(weights)
    assert float(exe.module.to_numpy(loss)) == pytest.approx(want_loss, rel=tol.rtol, abs=tol.atol, nan_ok=True)
    assume(np.isfinite(want_loss))  # finite differences of a NaN loss (layer_norm, eps=0, of one element) say nothing

    for p in trained:
        want = np.zeros(weights[p.name].shape)
        for at in np.ndindex(want.shape):
            up, down = weights[p.name].copy(), weights[p.name].copy()
            up[at] += EPS
            down[at] -= EPS
            want[at] = (f({**weights, p.name: up}) - f({**weights, p.name: down})) / (2 * EPS)
        got = np.asarray(exe.module.to_numpy(grads[p.name]), np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(want).max()), err_msg=p.name)
