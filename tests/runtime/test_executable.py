"""Inputs that are valid but unusual reach every target as the reference reads them: arrays with
negative or transposed strides, and sequences of length 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shipei.ir.tolerance import compare

import shipei

TARGETS = ["torch", "jax", "tf", "mindspore"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GPT = dict(vocab=16, d_model=8, n_heads=2, n_layers=1, max_len=8)


@pytest.mark.parametrize("target", TARGETS)
def test_inputs_with_negative_or_transposed_strides(target: str) -> None:
    compiled = shipei.compile(EXAMPLES / "mlp.sp", target, hidden=16)
    exe = compiled.load(device="cpu")
    base = np.random.default_rng(0).standard_normal((784, 6)).astype(np.float32)
    for x in (base.T, base.T[::-1], base.T[:, ::-1]):  # transposed; rows, then columns reversed
        assert not x.flags.c_contiguous
        (expected,) = shipei.reference(compiled.ir, [x], compiled.weights)
        worst = compare(exe(x), expected, compiled.ir.outputs[0].dtype)
        assert worst.ok, worst


@pytest.mark.parametrize("target", TARGETS)
def test_a_sequence_of_length_zero(target: str) -> None:
    """An empty output needs no computing: the runtime returns it without running the target,
    whose kernels may refuse empty inputs (MindSpore's CPU LayerNorm does)."""
    compiled = shipei.compile(EXAMPLES / "transformer.sp", target, **GPT)
    exe = compiled.load(device="cpu")
    tokens = np.zeros((2, 0), np.int64)
    (expected,) = shipei.reference(compiled.ir, [tokens], compiled.weights)
    got = exe(tokens)
    assert got.shape == expected.shape == (2, 0, 16) and got.dtype == np.float32
    assert exe(np.ones((2, 3), np.int64)).shape == (2, 3, 16)


@pytest.mark.parametrize("target", TARGETS)
def test_a_prepared_call_runs_the_weights_bound_since(target: str) -> None:
    """`prepared` (what bench times) kept the model of its making: after `load_weights` it ran
    the old weights."""
    compiled = shipei.compile(EXAMPLES / "mlp.sp", target, hidden=16)
    exe = compiled.load(device="cpu")
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    prepared = exe.prepared(x)
    new = {k: v * 2 for k, v in compiled.weights.items()}
    exe.load_weights(new)
    (expected,), (old,) = (shipei.reference(compiled.ir, [x], w) for w in (new, compiled.weights))
    dtype = compiled.ir.outputs[0].dtype
    assert compare(prepared()[0], expected, dtype).ok and not compare(old, expected, dtype).ok


def test_a_shape_seen_before_is_checked_again_and_its_indices_every_call() -> None:
    """Each call's symbol bindings come from what its input shapes bound before; the checks a shape
    does not decide (dtype, gather indices) still run on every call, and an empty output is a new
    array each time."""
    compiled = shipei.compile(EXAMPLES / "transformer.sp", "torch", **GPT)
    exe = compiled.load(device="cpu")
    rng = np.random.default_rng(0)
    for t in (4, 6, 4, 0, 0):
        tokens = rng.integers(0, 16, (2, t))
        (expected,) = shipei.reference(compiled.ir, [tokens], compiled.weights)
        assert compare(exe(tokens), expected, compiled.ir.outputs[0].dtype).ok
    assert exe(tokens) is not exe(tokens)  # the empty result
    with pytest.raises(shipei.ShipeiError, match="index 16 is out of range"):
        exe(np.full((2, 4), 16))
    with pytest.raises(shipei.ShipeiError, match="expected i64"):
        exe(np.zeros((2, 4), np.float32))
    with pytest.raises(shipei.ShipeiError, match="rank 2"):
        exe(np.zeros(4, np.int64))


def test_a_loaded_program_s_files_last_as_long_as_the_process() -> None:
    """`load()` writes the program where its framework can read it back, and the end of the process
    removes it: a server that loads models must not fill the disk with them."""
    script = (
        "import sys, shipei; from pathlib import Path\n"
        "model = sys.argv[1]\n"
        "single = shipei.compile(model).load()\n"
        "pipeline = shipei.compile(model, device_map={'fc1': 'torch:cpu', '*': 'jax:cpu'}).load()\n"
        "files = [Path(single.module.__file__), Path(pipeline.driver.__file__)]\n"
        "assert all(f.is_file() for f in files), files\n"
        "pipeline.close()\n"
        "print(*files, sep='\\n')\n")
    run = subprocess.run([sys.executable, "-c", script, str(EXAMPLES / "mlp.sp")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    files = [Path(line) for line in run.stdout.splitlines()]
    assert len(files) == 2 and files[0].parent != files[1].parent
    assert not any(f.exists() or f.parent.exists() for f in files)
