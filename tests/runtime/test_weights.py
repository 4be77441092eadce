"""Weights are read and checked before any framework sees them, so every target refuses the same
files and arrays with the same message: the file, the key, what was expected and what came."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
from shipei.ir.errors import ShipeiError
from shipei.ir.tolerance import compare
from shipei.ir.types import DType
from shipei.runtime.weights import check_weights, read_safetensors

import shipei

TARGETS = ["torch", "jax", "tf", "mindspore"]
SRC = "model L() {\n  fc = Linear(3, 2)\n  forward(x: f32[B, 3]) -> f32[B, 2] { return fc(x) }\n}\n"
INTS = "model I() {\n  param t: i32[2] = zeros()\n  forward(x: i32[2]) -> i32[2] { return x + t }\n}\n"
X = np.arange(6, dtype=np.float32).reshape(2, 3) / 6


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding L compiled for all four targets, its weights and IR."""
    out = tmp_path_factory.mktemp("saved")
    for target in TARGETS:
        shipei.compile(SRC, target).save(out)
    return out


def _copy_with_weights(saved: Path, tmp_path: Path, data: bytes) -> Path:
    out = tmp_path / "model"
    shutil.copytree(saved, out)
    (out / "l.safetensors").write_bytes(data)
    return out


def _not_imported(target: str, directory: Path) -> None:
    """Make the generated program fail loudly if it is ever imported: a bad file must stop the
    load before the program (and so the framework) sees the weights."""
    program = directory / f"l_{target}.py"
    program.write_text("raise AssertionError('the generated program was imported')\n" + program.read_text())


@pytest.mark.parametrize("target", TARGETS)
def test_a_truncated_file_names_the_file_on_every_target(target: str, saved: Path, tmp_path: Path) -> None:
    whole = (saved / "l.safetensors").read_bytes()
    directory = _copy_with_weights(saved, tmp_path, whole[: len(whole) - 7])
    _not_imported(target, directory)
    with pytest.raises(ShipeiError) as info:
        shipei.load(directory, target)
    assert str(info.value).startswith(f"error: cannot read weights from {directory / 'l.safetensors'}: "
                                      "not a safetensors file (")


def test_a_renamed_pickle_is_refused_and_never_unpickled(saved: Path, tmp_path: Path) -> None:
    ran = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):  # unpickling this would create `ran`
            return (Path.touch, (ran,))

    directory = _copy_with_weights(saved, tmp_path, pickle.dumps({"fc.weight": Payload()}))
    with pytest.raises(ShipeiError) as info:
        shipei.load(directory, "torch")
    message = str(info.value)
    assert f"cannot read weights from {directory / 'l.safetensors'}: not a safetensors file" in message
    assert "hint: it is a pickle, which shipei never loads" in message
    assert not ran.exists()


def test_a_torch_save_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    torch.save({"fc.weight": torch.zeros(2, 3)}, path)
    with pytest.raises(ShipeiError, match=r"hint: it is a zip archive \(torch.save\)"):
        read_safetensors(path)


@pytest.mark.parametrize("content", [b"", b"hello, weights", b"\x10\x00\x00\x00\x00\x00\x00\x00{}"])
def test_other_files_that_are_not_safetensors(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    with pytest.raises(ShipeiError, match=f"cannot read weights from {path}: not a safetensors file"):
        read_safetensors(path)


def test_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ShipeiError, match=f"no weights file at {tmp_path / 'absent.safetensors'}"):
        read_safetensors(tmp_path / "absent.safetensors")
    with pytest.raises(ShipeiError, match=f"no weights file at {tmp_path}"):
        read_safetensors(tmp_path)


def _weights(dtype: np.dtype | type = np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"fc.weight": rng.standard_normal((2, 3)).astype(dtype), "fc.bias": rng.standard_normal(2).astype(dtype)}


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.complex64])
@pytest.mark.parametrize("target", TARGETS)
def test_a_weight_of_another_dtype_is_refused_on_every_target(target: str, dtype: type, saved: Path) -> None:
    exe = shipei.load(saved, target, device="cpu")
    before = exe(X)
    wrong = {**_weights(), "fc.weight": _weights(dtype)["fc.weight"]}
    with pytest.raises(ShipeiError) as info:
        exe.load_weights(wrong)
    got = {np.int32: "i32", np.bool_: "bool", np.complex64: "complex64"}[dtype]
    assert str(info.value).startswith(f"error: weight 'fc.weight': expected f32[2, 3], got {got}[2, 3]")
    assert np.array_equal(exe(X), before), "a refused load leaves the weights as they were"


@pytest.mark.parametrize("target", TARGETS)
def test_an_unexpected_name_is_refused_on_every_target(target: str, saved: Path, tmp_path: Path) -> None:
    directory = tmp_path / "model"
    shutil.copytree(saved, directory)
    path = directory / "l.safetensors"
    safetensors.numpy.save_file({**_weights(), "fc.wieght": np.zeros((2, 3), np.float32)}, str(path))
    _not_imported(target, directory)
    with pytest.raises(ShipeiError) as info:
        shipei.load(directory, target)
    assert str(info.value) == f"error: {path}: weights do not match L's params: unexpected fc.wieght"


def test_missing_names_get_a_did_you_mean() -> None:
    graph = shipei.parse(SRC)
    with pytest.raises(ShipeiError) as info:
        check_weights(graph, {"fc.wieght": np.zeros((2, 3), np.float32), "fc.bias": np.zeros(2, np.float32)})
    assert str(info.value) == ("error: weights do not match L's params: unexpected fc.wieght; missing fc.weight\n"
                               "hint: did you mean 'fc.weight'?")


def test_a_wrong_shape_in_a_file_names_file_key_expected_and_got(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file({**_weights(), "fc.bias": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(ShipeiError) as info:
        check_weights(shipei.parse(SRC), path)
    assert str(info.value) == f"error: {path}: weight 'fc.bias': expected f32[2], got f32[3]"


def test_cast_allows_same_kind_conversions_only(saved: Path) -> None:
    exe = shipei.load(saved, "torch", device="cpu")
    wide = _weights(np.float64)
    with pytest.raises(ShipeiError, match="hint: pass cast=True to convert it"):
        exe.load_weights(wide)
    exe.load_weights(wide, cast=True)
    expected = X @ wide["fc.weight"].T.astype(np.float32) + wide["fc.bias"].astype(np.float32)
    np.testing.assert_allclose(exe(X), expected, rtol=1e-6)
    with pytest.raises(ShipeiError, match="hint: a complex weight has no real value to take"):
        exe.load_weights(_weights(np.complex128), cast=True)
    graph = shipei.parse(INTS)
    with pytest.raises(ShipeiError, match=r"expected i32\[2\], got f32\[2\]\nhint: cast=True converts only within"):
        check_weights(graph, {"t": np.zeros(2, np.float32)}, cast=True)


def test_cast_through_load_converts_a_file(saved: Path, tmp_path: Path) -> None:
    directory = tmp_path / "model"
    shutil.copytree(saved, directory)
    safetensors.numpy.save_file(_weights(np.float64), str(directory / "l.safetensors"))
    with pytest.raises(ShipeiError, match=r"'fc.weight': expected f32\[2, 3\], got f64\[2, 3\]\nhint: pass cast=True"):
        shipei.load(directory, "jax")
    exe = shipei.load(directory, "jax", device="cpu", cast=True)
    assert exe(X).dtype == np.float32


def test_narrower_stored_integers_are_widened() -> None:
    """quantize stores i32 weights as int8; reading them back is lossless."""
    graph = shipei.parse(INTS)
    arrays = check_weights(graph, {"t": np.array([-7, 100], np.int8)})
    assert arrays["t"].dtype == np.int32 and arrays["t"].tolist() == [-7, 100]
    with pytest.raises(ShipeiError, match=r"expected i32\[2\], got i64\[2\]"):
        check_weights(graph, {"t": np.array([1, 2], np.int64)})


BF16 = ("model H() {\n  param w: bf16[3, 2] = normal()\n"
        "  forward(x: bf16[B, 3]) -> bf16[B, 2] { return x @ w }\n}\n")


@pytest.mark.parametrize("target", ["torch", "jax", "tf"])  # MindSpore's CPU kernels lack bf16
def test_bf16_weights_round_trip_through_a_file(target: str, tmp_path: Path) -> None:
    compiled = shipei.compile(BF16, target)
    assert compiled.weights["w"].dtype == ml_dtypes.bfloat16
    compiled.save(tmp_path)
    assert read_safetensors(tmp_path / "h.safetensors")["w"].dtype == ml_dtypes.bfloat16
    x = X.astype(ml_dtypes.bfloat16)
    assert np.array_equal(shipei.load(tmp_path, target, device="cpu")(x), compiled.load(device="cpu")(x))


def test_a_bf16_torch_state_dict_loads_exactly() -> None:
    """numpy has no bfloat16 of its own: a bf16 torch tensor is read via float32, which holds it."""
    exe = shipei.compile(BF16, "torch").load(device="cpu")
    w = torch.randn(3, 2).to(torch.bfloat16)
    exe.load_weights({"w": w})
    x = X.astype(ml_dtypes.bfloat16)
    expected = (torch.from_numpy(X).to(torch.bfloat16) @ w).float().numpy()
    worst = compare(exe(x).astype(np.float32), expected, DType.bf16)
    assert worst.ok, worst
    with pytest.raises(ShipeiError, match=r"expected bf16\[3, 2\], got f32\[3, 2\]\nhint: pass cast=True"):
        exe.load_weights({"w": w.float()})
