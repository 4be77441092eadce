"""Training, as a user runs it: the digits models learn on every target, the four frameworks take
the same steps as a hand-written torch.optim loop, a checkpoint resumes on another target, and bad
input is a clear error that writes nothing."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
import torch.nn.functional as F
from shipei.codegen import get_target
from shipei.ir.errors import ShipeiError
from shipei.ir.types import DType

from shipei.cli import main
from shipei.testing import available_targets
from shipei.training import Dataset, Trainer, _read_checkpoint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP, CNN = EXAMPLES / "digits_mlp.sp", EXAMPLES / "digits_cnn.sp"


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return Dataset.digits(seed=0)


def _trainer(source: Path, target: str, epochs: int, **kwargs) -> Trainer:
    warnings.simplefilter("ignore")  # frameworks' own notices about CPU fallbacks
    settings = dict(optimizer="adamw", lr=1e-2, schedule="cosine", warmup=20, total_steps=epochs * 23)
    return Trainer(source, target, **{**settings, **kwargs})


@pytest.mark.parametrize("target", available_targets())
@pytest.mark.parametrize("model", [MLP, CNN], ids=["mlp", "cnn"])
def test_the_digits_models_reach_95_percent_held_out_on_every_target(model: Path, target: str,
                                                                       digits: Dataset) -> None:
    history = _trainer(model, target, epochs=8).fit(digits, epochs=8, batch=64)
    assert history.rows[-1]["val_accuracy"] >= 0.95, history.rows
    assert history.rows[-1]["loss"] < history.rows[0]["loss"] / 2


MLP_F64 = """
model DigitsMLP64() {
    param w1: f64[64, 64] = kaiming_uniform(fan_in=64)
    param b1: f64[64] = uniform(low=-0.125, high=0.125)
    param w2: f64[10, 64] = kaiming_uniform(fan_in=64)
    param b2: f64[10] = uniform(low=-0.125, high=0.125)

    forward(x: f64[B, 64]) -> f64[B, 10] {
        return relu(x @ w1.T + b1) @ w2.T + b2
    }

    loss(x: f64[B, 64], y: i64[B]) -> f64[] {
        return cross_entropy(forward(x), y, label_smoothing=0.05)
    }
}
"""


def _batches(digits: Dataset, steps: int, batch: int, dtype: type = np.float32):
    order = np.random.default_rng(0).permutation(len(digits.x_train))
    for t in range(steps):
        idx = order[(t * batch) % len(order):][:batch]
        yield digits.x_train[idx].astype(dtype), digits.y_train[idx]


def _torch_reference(weights: dict[str, np.ndarray], digits: Dataset, steps: int, batch: int,
                     names: tuple[str, ...] = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"),
                     dtype: type = np.float32) -> dict[str, np.ndarray]:
    """The digits MLP as one would write it in torch, trained by torch.optim.AdamW on the same
    batches with the same learning rates."""
    params = {k: torch.tensor(weights[k], requires_grad=True) for k in names}
    w1, b1, w2, b2 = params.values()
    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    trainer_schedule = _trainer(MLP, "torch", epochs=8).schedule
    for t, (x, y) in enumerate(_batches(digits, steps, batch, dtype)):
        h = F.relu(F.linear(torch.tensor(x), w1, b1))
        loss = F.cross_entropy(F.linear(h, w2, b2), torch.tensor(y), label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = trainer_schedule.rate(t)
        opt.step()
    return {k: v.detach().numpy() for k, v in params.items()}


def test_fifty_steps_agree_across_targets_and_with_torch_optim(digits: Dataset) -> None:
    """In f32, each framework's matmuls and reductions round in their own order: the gradients of
    a step differ by a few ulps, and AdamW's normalized updates carry that on. Measured here, 50
    steps leave the params 1.2e-7 (torch) to 3.6e-7 (MindSpore) from torch.optim's, while they
    move by up to 0.35: a few ulps of the params. The bound, 1e-5 absolute, is 30 times that and
    a thousandth of what one step at the peak learning rate may move a param (1e-2)."""
    steps, batch = 50, 32
    start = _trainer(MLP, "torch", epochs=8).weights
    want = _torch_reference(start, digits, steps, batch)
    for target in available_targets():
        trainer = _trainer(MLP, target, epochs=8, weights=start)
        for x, y in _batches(digits, steps, batch):
            trainer.step(x, y)
        got = trainer.weights
        for k in want:
            assert np.abs(want[k] - start[k]).max() > 0.05, f"{k} hardly moved"
            np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=0, err_msg=f"{target}: {k}")


def test_fifty_steps_in_float64_agree_to_rounding(digits: Dataset) -> None:
    """In f64 the same 50 steps agree to rounding: measured here 2.2e-16 (torch) to 1.1e-15
    (MindSpore) from torch.optim's, on params that move by up to 0.35. The bound, 1e-12, is a
    thousand times that and ten thousand times below what an f32 anywhere in the step (a learning
    rate, a bias correction, a kernel computing in f32) leaves: 1e-8 or more."""
    steps, batch = 50, 32
    start = _trainer(MLP_F64, "torch", epochs=8).weights
    assert {w.dtype for w in start.values()} == {np.dtype(np.float64)}
    want = _torch_reference(start, digits, steps, batch, names=("w1", "b1", "w2", "b2"), dtype=np.float64)
    for target in available_targets():
        trainer = _trainer(MLP_F64, target, epochs=8, weights=start)
        for x, y in _batches(digits, steps, batch, np.float64):
            trainer.step(x, y)
        for k, got in trainer.weights.items():
            assert np.abs(want[k] - start[k]).max() > 0.05, f"{k} hardly moved"
            np.testing.assert_allclose(got, want[k], atol=1e-12, rtol=0, err_msg=f"{target}: {k}")


@pytest.mark.parametrize("target", available_targets())
def test_bf16_mixed_precision_trains_where_the_target_offers_it(target: str, digits: Dataset) -> None:
    """Matmuls in bf16 over f32 params: the losses move off the f32 run's by more than f32 rounding
    and less than bf16's (a few 1e-3 relative over 20 steps), and the model still learns."""
    if DType.bf16 not in get_target(target).autocast:
        with pytest.raises(ShipeiError, match=f"{target} does not train in bf16 mixed precision"):
            _trainer(MLP, target, epochs=8, precision="bf16")
        return
    start = _trainer(MLP, target, epochs=8).weights
    runs = {precision: _trainer(MLP, target, epochs=8, weights=start, precision=precision)
            for precision in ("f32", "bf16")}
    losses = {precision: [trainer.step(x, y) for x, y in _batches(digits, 20, 32)]
              for precision, trainer in runs.items()}
    gap = np.abs(np.array(losses["bf16"]) - np.array(losses["f32"])) / np.array(losses["f32"])
    assert 1e-5 < gap.max() < 2e-2, gap
    assert {w.dtype for w in runs["bf16"].weights.values()} == {np.dtype(np.float32)}
    history = _trainer(MLP, target, epochs=8, precision="bf16").fit(digits, epochs=8, batch=64)
    assert history.rows[-1]["val_accuracy"] >= 0.95, history.rows


@pytest.mark.parametrize("target", available_targets())
def test_f16_training_scales_the_loss_and_skips_steps_whose_gradients_overflow(target: str, digits: Dataset,
                                                                              tmp_path: Path) -> None:
    if DType.f16 not in get_target(target).autocast:
        with pytest.raises(ShipeiError, match=f"{target} does not train in f16 mixed precision"):
            _trainer(MLP, target, epochs=8, precision="f16")
        return
    trainer = _trainer(MLP, target, epochs=8, precision="f16")
    trainer.scaler.scale = 2.0**24  # the loss times this overflows float16 in the backward pass
    start = trainer.weights
    batches = list(_batches(digits, 20, 32))
    trainer.step(*batches[0])
    assert trainer.scaler.skipped == 1 and trainer.scaler.scale == 2.0**23
    for k, v in trainer.weights.items():
        np.testing.assert_array_equal(v, start[k], err_msg=f"{k} moved in a skipped step")
    for x, y in batches[1:]:
        trainer.step(x, y)
    assert 1 < trainer.scaler.skipped < 20 and 0 < trainer.scaler.good <= 20 - trainer.scaler.skipped
    assert max(np.abs(v - start[k]).max() for k, v in trainer.weights.items()) > 1e-3
    resumed = Trainer.resume(trainer.save(tmp_path / "f16.safetensors"), MLP, target, precision="f16")
    assert resumed.scaler == trainer.scaler
    history = _trainer(MLP, target, epochs=8, precision="f16").fit(digits, epochs=8, batch=64)
    assert history.rows[-1]["val_accuracy"] >= 0.95, history.rows


DROPOUT_MLP = """
model DropoutMLP() {
    fc1 = Linear(64, 64)
    drop = Dropout(0.5)
    fc2 = Linear(64, 10)
    forward(x: f32[B, 64]) -> f32[B, 10] { return fc2(drop(relu(fc1(x)))) }
    loss(x: f32[B, 64], y: i64[B]) -> f32[] { return cross_entropy(forward(x), y) }
}
"""


def test_dropout_draws_seeded_masks_that_every_target_applies_as_torch_does(digits: Dataset) -> None:
    """In training, dropout multiplies by a mask drawn for the step (0, or 1 / (1 - p) where kept:
    torch's scaling); the trainer draws it, so the four targets drop the same elements. Evaluation
    keeps every element."""
    steps, batch = 20, 32
    mode = Trainer(DROPOUT_MLP, "torch").mode
    (first,) = mode.draw_masks({"B": 64}, seed=0, step=1)
    assert first.shape == (64, 64) and set(np.unique(first)) == {0.0, 2.0}
    assert 0.45 < (first > 0).mean() < 0.55
    assert np.array_equal(first, mode.draw_masks({"B": 64}, seed=0, step=1)[0])
    assert not np.array_equal(first, mode.draw_masks({"B": 64}, seed=0, step=2)[0])
    assert not np.array_equal(first, mode.draw_masks({"B": 64}, seed=1, step=1)[0])

    start = Trainer(DROPOUT_MLP, "torch").weights
    params = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    for t, (x, y) in enumerate(_batches(digits, steps, batch), 1):
        (mask,) = mode.draw_masks({"B": batch}, seed=0, step=t)
        h = F.relu(F.linear(torch.tensor(x), params["fc1.weight"], params["fc1.bias"])) * torch.tensor(mask)
        loss = F.cross_entropy(F.linear(h, params["fc2.weight"], params["fc2.bias"]), torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for target in available_targets():
        trainer = Trainer(DROPOUT_MLP, target, optimizer="adamw", lr=1e-2, weights=start)
        x, y = next(_batches(digits, 1, batch))
        assert abs(trainer.evaluate(x, y)[0] - trainer.step(x, y)) > 1e-3  # the step's loss drops elements
        for x, y in list(_batches(digits, steps, batch))[1:]:
            trainer.step(x, y)
        for k, got in trainer.weights.items():
            np.testing.assert_allclose(got, params[k].detach().numpy(), atol=1e-5, rtol=0, err_msg=f"{target}: {k}")


BN_NET = """
model BNNet() {
    conv = Conv2d(1, 4, 3, padding=1, bias=false)
    bn = BatchNorm2d(4)
    fc = Linear(4 * 64, 10)
    forward(x: f32[B, 64]) -> f32[B, 10] {
        y = relu(bn(conv(reshape(x, [B, 1, 8, 8]))))
        return fc(flatten(y, start_dim=1))
    }
    loss(x: f32[B, 64], y: i64[B]) -> f32[] { return cross_entropy(forward(x), y) }
}
"""


def test_batch_norm_trains_as_torchs_does_on_every_target(digits: Dataset) -> None:
    """Batch statistics in the step, running statistics updated (momentum 0.1, unbiased variance):
    torch.nn.BatchNorm2d in train mode with torch.optim.SGD is the oracle, five steps."""
    start = Trainer(BN_NET, "torch", optimizer="sgd", lr=0.05).weights
    conv = torch.tensor(start["conv.weight"], requires_grad=True)
    bn = torch.nn.BatchNorm2d(4).train()
    fc_w, fc_b = (torch.tensor(start[k], requires_grad=True) for k in ("fc.weight", "fc.bias"))
    opt = torch.optim.SGD([conv, *bn.parameters(), fc_w, fc_b], lr=0.05)
    batches = [(digits.x_train[s * 32:(s + 1) * 32], digits.y_train[s * 32:(s + 1) * 32]) for s in range(5)]
    for x, y in batches:
        h = F.relu(bn(F.conv2d(torch.tensor(x).reshape(-1, 1, 8, 8), conv, padding=1)))
        loss = F.cross_entropy(F.linear(h.flatten(1), fc_w, fc_b), torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    want = {"bn.running_mean": bn.running_mean, "bn.running_var": bn.running_var, "bn.weight": bn.weight,
            "fc.bias": fc_b, "conv.weight": conv}
    for target in available_targets():
        trainer = Trainer(BN_NET, target, optimizer="sgd", lr=0.05, weights=start)
        for x, y in batches:
            trainer.step(x, y)
        got = trainer.weights
        assert got["bn.running_var"].min() < 0.9  # moved from its initial ones
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v.detach().numpy(), atol=1e-5, rtol=0, err_msg=f"{target}: {k}")


def test_the_transformer_takes_the_same_steps_on_every_target() -> None:
    """A language model's loss (next-token cross-entropy): fifteen steps on one batch, attention,
    layer norm and embeddings differentiated by each framework, the losses alike to 1e-4."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 512, (4, 16))
    targets = np.roll(tokens, -1, axis=1)
    curves = {}
    for target in available_targets():
        trainer = _trainer(EXAMPLES / "transformer.sp", target, epochs=1, lr=3e-3, schedule="constant", warmup=0,
                           n_layers=1)
        curves[target] = [trainer.step(tokens, targets) for _ in range(15)]
    with pytest.raises(ShipeiError, match="the batch's x and y: input 'targets': symbol T is 16 elsewhere but 8 here"):
        trainer.step(tokens, targets[:, :8])
    first = next(iter(curves.values()))
    assert first[-1] < first[0] / 10
    for target, curve in curves.items():
        np.testing.assert_allclose(curve, first, rtol=1e-4, err_msg=target)


def test_a_checkpoint_written_on_one_target_resumes_on_another(tmp_path: Path, digits: Dataset) -> None:
    targets = available_targets()
    first, second = targets[0], targets[-1]
    ckpt = tmp_path / "digits.safetensors"
    trainer = _trainer(MLP, first, epochs=2)
    trainer.fit(digits, epochs=1, batch=64, checkpoint=ckpt)
    resumed = Trainer.resume(ckpt, MLP, second)
    assert (resumed.epoch, resumed.step_count) == (1, 23)
    resumed.fit(digits, epochs=2, batch=64)
    straight = _trainer(MLP, second, epochs=2)
    straight.fit(digits, epochs=2, batch=64)
    for k, v in straight.weights.items():
        np.testing.assert_allclose(resumed.weights[k], v, atol=1e-4, rtol=0, err_msg=k)


def test_train_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "run.safetensors"
    args = ["train", str(MLP), "--target", "jax", "--lr", "1e-2", "--schedule", "cosine", "--warmup", "20",
            "--epochs", "3", "--checkpoint", str(ckpt)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training DigitsMLP on jax (cpu): 1,438 examples, 359 held out" in out
    assert "epoch   3  loss" in out and "held-out accuracy after 3 epochs (69 steps)" in out and ckpt.exists()
    assert main(["train", str(MLP), "--target", "torch", "--epochs", "4", "--resume", str(ckpt)]) == 0
    assert "resumed" in capsys.readouterr().out


def _bad(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_training_input_is_a_clear_error_and_writes_nothing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "keep.safetensors"
    assert main(["train", str(MLP), "--target", "jax", "--epochs", "1", "--checkpoint", str(ckpt)]) == 0
    before = ckpt.read_bytes()
    capsys.readouterr()
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.zeros((20, 64), np.float32), y=np.full(20, 10))
    assert "labels from 10 to 10, outside the model's 10 classes [0, 10)" in _bad(
        ["train", str(MLP), "--data", str(labels), "--checkpoint", str(ckpt)], capsys)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((4, 64)))
    assert "holds ['images']" in _bad(["train", str(MLP), "--data", str(wrong)], capsys)
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, x=np.zeros((20, 32), np.float32), y=np.zeros(20, np.int64))
    assert "examples of shape [32], but DigitsMLP takes f32[B, 64]" in _bad(["train", str(MLP), "--data", str(shapes)],
                                                                             capsys)
    assert "the learning rate must be positive, got 0.0" in _bad(["train", str(MLP), "--lr", "0"], capsys)
    assert "is not of this model" in _bad(["train", str(CNN), "--resume", str(ckpt), "--checkpoint", str(ckpt)],
                                          capsys)
    assert "has no loss method" in _bad(["train", str(EXAMPLES / "mlp.sp")], capsys)
    for name, arrays, error in [
        ("short", dict(x=np.zeros((100, 64), np.float32), y=np.zeros(50, np.int64)), "x and y hold 100 and 50"),
        ("none", dict(x_train=np.zeros((4, 64), np.float32), y_train=np.zeros(4, np.int64),
                      x_val=np.zeros((0, 64), np.float32), y_val=np.zeros(0, np.int64)), "hold 0 and 0 examples"),
        ("complex", dict(x=np.zeros((20, 64), np.complex64), y=np.zeros(20, np.int64)),
         "x_train is complex64, which DigitsMLP's f32[B, 64] input cannot take"),
        ("nan", dict(x=np.where(np.eye(20, 64, 3) > 0, np.nan, 1.0), y=np.zeros(20, np.int64)),
         "x_train holds 16 NaN or infinite values"),
        ("huge", dict(x=np.full((20, 64), 1e300), y=np.zeros(20, np.int64)),
         "the data's x_train: input 'x': 1e+300 is past f32's range (from float64)"),
    ]:
        np.savez(tmp_path / f"{name}.npz", **arrays)
        assert error in _bad(["train", str(MLP), "--data", str(tmp_path / f"{name}.npz"), "--checkpoint", str(ckpt)],
                             capsys)
    arrays, meta = _read_checkpoint(ckpt)
    state = next(k for k in arrays if k.startswith("state.") and arrays[k].ndim == 2)
    for name, changed, error in [  # a checkpoint's metadata and state, edited by hand
        ("epoch", (arrays, meta | {"epoch": "99999999999"}), "says epoch 99999999999 at step"),
        ("optimizer", (arrays, meta | {"optimizer": "{bad"}), "its metadata does not say how to resume"),
        ("schedule", (arrays, {k: v for k, v in meta.items() if k != "schedule"}), "does not say how to resume"),
        ("state", (arrays | {state: arrays[state].reshape(-1)}, meta), f"no optimizer state {state} of its param's"),
    ]:
        edited = tmp_path / f"{name}.safetensors"
        safetensors.numpy.save_file(changed[0], str(edited), metadata=changed[1])
        assert error in _bad(["train", str(MLP), "--resume", str(edited), "--epochs", "99"], capsys), name
    assert ckpt.read_bytes() == before


def test_float64_features_train_as_the_model_s_float32(tmp_path: Path, digits: Dataset) -> None:
    """Data as numpy and scikit-learn make it, float64 features and int32 labels, is cast to the
    loss's input dtypes once: the same steps as float32 data."""
    wide = Dataset(digits.x_train[:256].astype(np.float64), digits.y_train[:256].astype(np.int32),
                   digits.x_val[:64].astype(np.float64), digits.y_val[:64].astype(np.int32))
    narrow = Dataset(digits.x_train[:256], digits.y_train[:256], digits.x_val[:64], digits.y_val[:64])
    runs = [_trainer(MLP, "torch", epochs=1).fit(data, 1, 64).rows[-1]["loss"] for data in (wide, narrow)]
    assert runs[0] == runs[1]


def test_the_step_schedule_divides_the_rate_by_ten_after_each_third_of_the_steps() -> None:
    schedule = _trainer(MLP, "torch", epochs=1, schedule="step", warmup=0, total_steps=30).schedule
    assert [schedule.rate(t) for t in (0, 9, 10, 19, 20, 29)] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4])


def test_the_learning_rate_range_test_suggests_a_rate_that_trains(tmp_path: Path, digits: Dataset,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "lr.png"
    assert main(["tune", str(MLP), "--lr", "--target", "jax", "--steps", "60", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    suggested = float(out.split("suggested learning rate: ")[1].split()[0])
    assert plot.stat().st_size > 10_000 and "lr          loss" in out
    assert 1e-4 < suggested < 1.0
    at = {lr: _trainer(MLP, "jax", epochs=2, lr=lr, schedule="constant", warmup=0).fit(digits, 2, 64).rows[-1]
          for lr in (suggested, 1e-5)}
    assert at[suggested]["val_accuracy"] > 0.9 > at[1e-5]["val_accuracy"]
    assert "needs 0 < lr_min < lr_max" in _bad(["tune", str(MLP), "--lr", "--lr-min", "0"], capsys)


@pytest.mark.parametrize("target", ["torch", "jax"])
def test_a_bad_batch_is_refused_before_the_step_changes_anything(target: str, digits: Dataset) -> None:
    """`step` passed its batch to the framework unchecked: a NaN feature stepped the weights to NaN
    before the NaN loss was reported, so every later step failed too; wrong dtypes, shapes,
    labels and layouts were the framework's tracebacks; an empty batch said "lower the learning
    rate"."""
    trainer = _trainer(MLP, target, epochs=1)
    x, y = digits.x_train[:8], np.arange(8)
    before = trainer.weights
    for batch, error in [
        ((np.where(np.eye(8, 64) > 0, np.nan, x), y), "the batch's x holds 8 NaN or infinite values"),
        ((x[:0], y[:0]), "the batch's x and y hold 0 and 0 examples"),
        ((x[:, :10], y), "the batch's x has examples of shape [10], but DigitsMLP takes f32[B, 64]"),
        ((x, y[:3]), "the batch's x and y hold 8 and 3 examples"),
        ((x, y + 100), "the batch's y holds labels from 100 to 107, outside the model's 10 classes"),
        ((x, y.astype(np.float32)), "the batch's y is float32, which DigitsMLP's i64[B] input cannot take"),
        ((x.astype(object), y), "the batch's x is object"),
        ((x,), "DigitsMLP's loss takes 2 arrays a batch (x, y), got 1"),
        ((np.float32(1), np.int64(1)), "the batch's x has examples of shape [], but DigitsMLP takes f32[B, 64]"),
    ]:
        with pytest.raises(ShipeiError, match=re.escape(error)):
            trainer.step(*batch)
    with pytest.raises(ShipeiError, match="the learning rate must be a number at least 0, got 'a'"):
        trainer.step(x, y, lr="a")
    assert trainer.step_count == 0
    assert all(np.array_equal(before[k], v) for k, v in trainer.weights.items())
    # what a caller's arrays are, as numpy makes them, steps as float32 in order does
    odd = trainer.step(x[::-1].astype(">f8"), y[::-1].astype(np.int32))
    again = _trainer(MLP, target, epochs=1)
    assert odd == again.step(np.ascontiguousarray(x[::-1]), y[::-1]) and np.isfinite(odd)


def test_bad_fit_evaluate_and_split_arguments_are_clear_errors(digits: Dataset) -> None:
    trainer = _trainer(MLP, "torch", epochs=1)
    for call, error in [
        (lambda: trainer.fit(digits, epochs=1, batch=2.5), "batch must be a whole number >= 1, got 2.5"),
        (lambda: trainer.fit(None, epochs=1, batch=8), "training data must be a shipei Dataset, got NoneType"),
        (lambda: trainer.fit(digits, epochs=float("nan"), batch=8), "epochs must be a whole number >= 0, got nan"),
        (lambda: trainer.evaluate(digits.x_val, digits.y_val[:2]),
         f"the held-out x and y hold {len(digits.x_val)} and 2 examples"),
        (lambda: trainer.evaluate(digits.x_val, digits.y_val, batch=0), "batch must be a whole number >= 1, got 0"),
        (lambda: Dataset.split(digits.x_val, digits.y_val, 0, float("nan")),
         "share must be a number above 0 and below 1, got nan"),
        (lambda: Dataset.split(digits.x_val, digits.y_val, 0, 2.0),
         "share must be a number above 0 and below 1, got 2.0"),
        (lambda: Dataset.split(digits.x_val, digits.y_val, -1, 0.2), "the seed must be a whole number >= 0, got -1"),
        (lambda: Trainer(MLP, seed=-1), "seed must be a whole number >= 0, got -1"),
    ]:
        with pytest.raises(ShipeiError, match=error):
            call()
    split = Dataset.split(digits.x_val[:2], digits.y_val[:2], 0, 0.9)  # both parts keep one example
    assert len(split.x_train) == len(split.x_val) == 1


def test_a_loss_of_one_input_steps_on_one_array(tmp_path: Path) -> None:
    """An autoencoder's loss takes no labels: its step takes the batch alone, checked as any."""
    source = tmp_path / "ae.sp"
    source.write_text("model AE() {\n    enc = Linear(8, 2)\n    dec = Linear(2, 8)\n\n"
                      "    forward(x: f32[B, 8]) -> f32[B, 8] {\n        return dec(relu(enc(x)))\n    }\n\n"
                      "    loss(x: f32[B, 8]) -> f32[] {\n        d = forward(x) - x\n"
                      "        return mean(d * d)\n    }\n}\n")
    trainer = _trainer(source, "torch", epochs=1, warmup=0)
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    losses = [trainer.step(x) for _ in range(20)]
    assert losses[-1] < losses[0]
    with pytest.raises(ShipeiError, match=re.escape("AE's loss takes 1 array a batch (x), got 2")):
        trainer.step(x, x)
    with pytest.raises(ShipeiError, match="the batch's x has examples of shape \\[4\\], but AE takes f32\\[B, 8\\]"):
        trainer.step(x[:, :4])
