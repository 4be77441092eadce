"""A model declares how it is trained with a `loss` method, which may call its forward; the
loss graph shares the model's params, and a model without one cannot be trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shipei

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits_mlp.sp"


def test_the_loss_graph_calls_forward_and_shares_its_params() -> None:
    forward = shipei.parse(DIGITS)
    loss = shipei.parse(DIGITS, method="loss")
    assert [p.name for p in loss.params] == [p.name for p in forward.params]
    assert [v.name for v in loss.inputs] == ["x", "y"] and loss.outputs[0].type.rank == 0
    assert [n.op for n in loss.nodes][:-1] == [n.op for n in forward.nodes]


def test_the_loss_is_torchs_cross_entropy_of_the_logits() -> None:
    compiled = shipei.compile(shipei.parse(DIGITS, method="loss"), "torch")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 64)).astype(np.float32), rng.integers(0, 10, 5)
    (got,) = shipei.reference(compiled.ir, [x, y], compiled.weights)
    logits = shipei.reference(shipei.parse(DIGITS), [x], compiled.weights)[0]
    want = F.cross_entropy(torch.tensor(logits), torch.tensor(y), label_smoothing=0.05).item()
    assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(("source", "message"), [
    ("model M() { forward(x: f32[B, 2]) -> f32[B, 2] { return x } }", "model M has no loss method"),
    ("layer L() { forward(x: f32[B, 2]) -> f32[B, 2] { return x }\n"
     "  loss(x: f32[B, 2]) -> f32[] { return sum(x) } }\n"
     "model M() { l = L()\n forward(x: f32[B, 2]) -> f32[B, 2] { return l(x) } }", "unknown method 'loss'"),
    ("model M() { forward(x: f32[B, 2]) -> f32[B, 2] { return x }\n"
     "  loss(x: f32[B, 2], y: i64[B]) -> f32[] { return cross_entropy(forward(x), y, label_smoothing=2.0) } }",
     "label_smoothing must be in \\[0, 1\\]"),
])
def test_bad_loss_methods_are_located_errors(source: str, message: str) -> None:
    with pytest.raises(shipei.ShipeiError, match=message) as info:
        shipei.parse(source, method="loss")
    assert info.value.loc is not None
