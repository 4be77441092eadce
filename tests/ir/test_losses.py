"""The losses mean what torch.nn.functional's do (torch is the oracle), in the reference and, by
their decompositions or a target's own kernel, on every target (the op x target suite runs them
too); bad labels and shapes are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shipei
from shipei.testing import available_targets

SOURCE = """
model Losses(smoothing: float = 0.0) {
    forward(x: f32[B, 5], y: i64[B], z: f32[B, 5]) -> (f32[], f32[], f32[]) {
        return cross_entropy(x, y, label_smoothing=smoothing), mse_loss(x, z), bce_with_logits(x, z)
    }
}
"""


def _inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3, (6, 5)), rng.integers(0, 5, 6), rng.random((6, 5)))


def _torch(x: np.ndarray, y: np.ndarray, z: np.ndarray, smoothing: float) -> list[float]:
    tx, tz = torch.tensor(x), torch.tensor(z)
    return [F.cross_entropy(tx, torch.tensor(y), label_smoothing=smoothing).item(), F.mse_loss(tx, tz).item(),
            F.binary_cross_entropy_with_logits(tx, tz).item()]


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_the_reference_computes_torchs_losses(smoothing: float, seed: int) -> None:
    graph = shipei.parse(SOURCE.replace("f32", "f64"), smoothing=smoothing)
    x, y, z = _inputs(seed)
    got = [float(v) for v in shipei.reference(graph, [x, y, z])]
    np.testing.assert_allclose(got, _torch(x, y, z, smoothing), rtol=1e-12)


@pytest.mark.parametrize("target", available_targets())
def test_every_target_computes_them(target: str) -> None:
    graph = shipei.parse(SOURCE, smoothing=0.1)
    x, y, z = _inputs(7)
    x, z = x.astype(np.float32), z.astype(np.float32)
    got = shipei.compile(graph, target).load(device="cpu").run(x, y, z)
    np.testing.assert_allclose([float(v) for v in got], _torch(x, y, z, 0.1), rtol=1e-5)


def test_a_label_out_of_range_is_an_error_naming_it() -> None:
    exe = shipei.compile(SOURCE, "torch").load(device="cpu")
    x, y, z = _inputs(0)
    y[2] = 5
    with pytest.raises(shipei.ShipeiError, match=r"cross_entropy's labels into 'x' .*index 5 is out of range \[0, 5\)"):
        exe.run(x.astype(np.float32), y, z.astype(np.float32))


@pytest.mark.parametrize(("change", "message"), [
    (("y: i64[B]", "y: i64[B, 2]"), "cross_entropy: takes logits \\[N, C\\] and class indices \\[N\\]"),
    (("z: f32[B, 5]", "z: f32[B, 4]"), "mse_loss: compares operands of one shape"),
    (("y: i64[B]", "y: f32[B]"), "labels has dtype f32"),
    (("smoothing: float = 0.0", "smoothing: float = 1.5"), "label_smoothing must be in \\[0, 1\\], got 1.5"),
])
def test_bad_losses_are_located_errors(change: tuple[str, str], message: str) -> None:
    with pytest.raises(shipei.ShipeiError, match=message) as info:
        shipei.parse(SOURCE.replace(*change))
    assert info.value.loc is not None and info.value.loc.line == 4
