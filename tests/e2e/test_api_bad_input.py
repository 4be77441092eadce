"""The Python API under hostile input, as a probe fed it: each argument Python would take and fail
on deep inside, or take and misread, is a clear error naming it; numbers that would not survive
a cast, weights that would fold or quantize silently wrong, are refused; what is merely unusual
(numpy's scalars, big-endian weights) computes what the reference does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from shipei.ir.tolerance import compare

import shipei

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP, CNN = str(EXAMPLES / "mlp.sp"), str(EXAMPLES / "cnn.sp")
DOUBLE = "model M() {\n  forward(x: i32[N]) -> i32[N] {\n    return x + x\n  }\n}\n"
HALF = DOUBLE.replace("i32", "f16")


@pytest.mark.parametrize("call, error", [
    (lambda: shipei.compile(None), "the source must be a .sp path, the model's text or an IR graph, got NoneType"),
    (lambda: shipei.compile(b"m.sp"), "the source must be a .sp path, the model's text or an IR graph, got bytes"),
    (lambda: shipei.compile(MLP, model=3), "model must be a model's name, got int 3"),
    (lambda: shipei.parse(MLP, limits=3), "limits must be a shipei.Limits, got int 3"),
    (lambda: shipei.Limits(size=-1), "Limits' size must be a whole number >= 1, got -1"),
    (lambda: shipei.parse(str(EXAMPLES / "digits_mlp.sp"), method="nope"), "unknown method 'nope'"),
    (lambda: shipei.compile(MLP, seed=1.5), "seed must be a whole number >= 0, got 1.5"),
    (lambda: shipei.compile(MLP, opt="2"), "opt must be a whole number >= 0, got '2'"),
    (lambda: shipei.compile(MLP, passes="dce"), "passes must be a list of pass names, got the string 'dce'"),
    (lambda: shipei.compile(MLP, options=[1]), "options must be a mapping, got list"),
    (lambda: shipei.compile(MLP, pass_options={"dims": {"B": "x"}}, opt=3),
     "pass option dims: B must be a whole number"),
    (lambda: shipei.compile(MLP, device_map="nonsense"), "device_map must be a mapping .* or 'auto', got 'nonsense'"),
    (lambda: shipei.compile(MLP, profile=3), "profile must be a shipei Profile, got int 3"),
    (lambda: shipei.compile(MLP, weights=[1]), "weights must be a .safetensors path or a mapping of name to array"),
    (lambda: shipei.compile(MLP, disable="dce"), "disable must be a list of pass names, got the string 'dce'"),
    (lambda: shipei.compile(MLP, passes=["dce", 3]), "passes must be a list of pass names, got \\['dce', 3\\]"),
    (lambda: shipei.compile(MLP).load(device=["cpu"]), "a device is a name such as 'cpu'"),
    (lambda: shipei.compile(MLP).estimate_memory(B=2.5), "MLP's B must be a whole number >= 0, got 2.5"),
    (lambda: shipei.compile(MLP).estimate_memory(B=-1), "MLP's B must be a whole number >= 0, got -1"),
    (lambda: shipei.reference(shipei.parse(MLP), [np.zeros((1, 784))], precision="f99"), "unknown precision 'f99'"),
])
def test_an_argument_of_the_wrong_kind_is_a_clear_error(call: Any, error: str) -> None:
    with pytest.raises(shipei.ShipeiError, match=error):
        call()


@pytest.mark.parametrize("changed, error", [
    (None, r"weight 'bn.weight': expected f32\[4\], got object\[\]"),  # folded as NaN: every output NaN
    (np.ones(3, np.float32), r"weight 'bn.weight': expected f32\[4\], got f32\[3\]"),  # numpy's broadcast error
    (np.ones(4, np.complex64), r"expected f32\[4\], got complex64\[4\]"),  # its imaginary part dropped
    (np.ones(4, np.float64), r"expected f32\[4\], got f64\[4\]"),  # load_weights refuses it without cast
])
def test_weights_given_to_compile_are_checked_before_the_passes_fold_them(changed: Any, error: str) -> None:
    weights = shipei.compile(CNN, width=4).weights
    with pytest.raises(shipei.ShipeiError, match=error):
        shipei.compile(CNN, freeze=True, width=4, weights={**weights, "bn.weight": changed})


def test_weights_of_another_float_width_compile_with_cast() -> None:
    weights = {k: v.astype(np.float64) for k, v in shipei.compile(MLP, hidden=16).weights.items()}
    with pytest.raises(shipei.ShipeiError, match="hint: pass cast=True to convert it"):
        shipei.compile(MLP, hidden=16, weights=weights)
    compiled = shipei.compile(MLP, hidden=16, weights=weights, cast=True, freeze=True)
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    (expected,) = shipei.reference(shipei.parse(MLP, hidden=16), [x], weights)
    assert compare(compiled.load("cpu")(x), expected, compiled.ir.outputs[0].dtype).ok


def test_quantizing_a_weight_that_is_not_finite_is_an_error() -> None:
    """int8 has no NaN: a NaN weight quantized to zeros, and the outputs were finite where the
    model's are NaN."""
    weights = shipei.compile(MLP).weights
    weights["fc1.weight"] = np.full_like(weights["fc1.weight"], np.nan)
    with pytest.raises(shipei.ShipeiError, match="cannot quantize 'fc1.weight': it holds 200704 NaN or infinite"):
        shipei.compile(MLP, freeze=True, weights=weights, passes=["quantize", "dce"])


@pytest.mark.parametrize("source, x, error", [
    (DOUBLE, np.array([2**31, 5]), "input 'x': 2147483648 does not fit i32 \\(from int64\\)"),  # ran as -2**31
    (DOUBLE, np.array([-2**31 - 1]), "input 'x': -2147483649 does not fit i32"),
    (HALF, np.array([70000]), "input 'x': 70000 is past f16's range \\(from int64\\)"),  # ran as inf
    (HALF, np.array([1e5], np.float32), "input 'x': 100000.0 is past f16's range \\(from float32\\)"),
    (DOUBLE, [[1, 2], [3]], "input 'x': not an array \\(ValueError"),  # numpy's ValueError
])
def test_an_input_that_would_not_survive_its_cast_is_refused(source: str, x: Any, error: str) -> None:
    exe = shipei.compile(source).load("cpu")
    for run in (exe, lambda x: shipei.reference(exe.graph, [x])):
        with pytest.raises(shipei.ShipeiError, match=error):
            run(x)
    assert exe(np.array([2**31 - 1, 5], np.int64) if source == DOUBLE else np.array([1.5, np.inf])).shape == (2,)


def test_load_weights_refuses_what_is_not_weights_and_takes_other_byte_orders() -> None:
    compiled = shipei.compile(MLP, hidden=16)
    exe = compiled.load("cpu")
    for weights, error in [
        (None, "weights must be a .safetensors path or a mapping of name to array, got NoneType"),
        (torch.nn.Linear(2, 2), "got Linear\nhint: pass a module's state_dict()"),
        ({**compiled.weights, "fc1.bias": torch.empty(16, device="meta")}, "weight 'fc1.bias': not an array"),
    ]:
        with pytest.raises(shipei.ShipeiError) as info:
            exe.load_weights(weights)
        assert error in str(info.value)
    swapped = {k: (v * 2).astype(">f4") for k, v in compiled.weights.items()}  # "expected f32, got float32"
    exe.load_weights(swapped)
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    (expected,) = shipei.reference(compiled.ir, [x], {k: v.astype(np.float32) for k, v in swapped.items()})
    assert compare(exe(x), expected, compiled.ir.outputs[0].dtype).ok


def test_numpy_scalars_set_model_parameters_and_huge_dims_estimate_exactly() -> None:
    assert shipei.parse(MLP, hidden=np.int64(8)).params[0].type.shape == (8, 784)
    estimate = shipei.compile(MLP).estimate_memory(B=10**30)  # numpy's int64 product overflowed
    assert estimate.inputs_bytes == 10**30 * 784 * 4
