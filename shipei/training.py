"""Training a model on one target: `shipei.Trainer` and `shipei train`.

A model declares how it is trained in its `loss` method. The trainer compiles that loss graph
for the target, as training computes it (`ir.passes.train_mode`: batch norm by the batch's
statistics, the running ones updated; passes that assume inference stay off: `training=True`), and
the optimizer's update graph (`ir.optim`) for the same target. A step is the generated program's own
`gradients` (the framework's autodiff: torch.autograd, jax.value_and_grad, tf.GradientTape,
mindspore.value_and_grad), then the update program, then `assign`: tensors never leave the
framework. The learning rate of each step comes from the schedule (`ir.schedule`).

A checkpoint is one safetensors file: the params (`param.NAME`), the optimizer's state
(`state.NAME.SLOT`), and in its metadata the step, epoch, model, optimizer and schedule, so a
run resumes where it stopped, on this target or another.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from .api import Source, compile, parse
from .codegen import get_target
from .files import writable_file
from .ir.errors import ShipeiError, real_number, whole_number
from .ir.graph import Graph
from .ir.interpreter import bind_symbols, coerce_input
from .ir.optim import Optimizer, update_graph
from .ir.passes.rewrite import clone
from .ir.passes.train_mode import scale_loss, to_training
from .ir.schedule import Schedule
from .ir.types import DType, TensorType
from .runtime.weights import read_npz

CHECKPOINT_FORMAT = "shipei-checkpoint-1"


@dataclass
class Dataset:
    """Features and integer labels, split into training and held-out parts."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @classmethod
    def digits(cls, seed: int = 0, held_out: float = 0.2) -> Dataset:
        """scikit-learn's bundled 8x8 digits (1,797 images, no download), scaled to [0, 1]; a
        random `held_out` share kept apart."""
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ShipeiError("--data digits needs scikit-learn", hint="pip install 'shipei[train]'") from None
        data = load_digits()
        return cls.split(data.data.astype(np.float32) / 16.0, data.target.astype(np.int64), seed, held_out)

    @classmethod
    def split(cls, x: np.ndarray, y: np.ndarray, seed: int, held_out: float) -> Dataset:
        """A random `held_out` share of the examples (at least one) kept apart from the rest."""
        if len(x) != len(y) or len(x) < 2:
            raise ShipeiError(f"x and y hold {len(x)} and {len(y)} examples",
                              hint="give as many labels as examples, at least two: one to train on, one held out")
        held_out = real_number(held_out, "the held-out share", 0.0, 1.0)
        seed = whole_number(seed, "the seed")
        order = np.random.default_rng(seed).permutation(len(x))
        cut = len(x) - min(len(x) - 1, max(1, round(held_out * len(x))))
        return cls(x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]])

    @classmethod
    def load(cls, path: str | Path, seed: int = 0) -> Dataset:
        """An .npz with `x` and `y` (split here), or `x_train`, `y_train`, `x_val`, `y_val`."""
        arrays = read_npz(path, "training data")
        if {"x_train", "y_train", "x_val", "y_val"} <= set(arrays):
            data = cls(arrays["x_train"], arrays["y_train"], arrays["x_val"], arrays["y_val"])
        elif {"x", "y"} <= set(arrays):
            try:
                data = cls.split(arrays["x"], arrays["y"], seed, 0.2)
            except ShipeiError as e:
                raise ShipeiError(f"data file {path}: {e.message}", hint=e.hint) from None
        else:
            raise ShipeiError(f"data file {path} holds {sorted(arrays) or 'no arrays'}",
                              hint="give arrays x and y, or x_train, y_train, x_val and y_val")
        for part in ("train", "val"):
            x, y = getattr(data, f"x_{part}"), getattr(data, f"y_{part}")
            if len(x) != len(y) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise ShipeiError(f"data file {path}: x_{part} {x.shape} and y_{part} {y.shape} {y.dtype} do not "
                                  "pair up as examples and integer labels")
        return data


@dataclass
class History:
    """Per epoch: the mean training loss, the held-out loss and accuracy, and seconds."""

    rows: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Trains a model's params on `target` with shipei's optimizer and schedule.

    Keras' and Lightning's shape: `Trainer(source, target, optimizer="adamw", lr=1e-3,
    schedule="cosine", warmup=100).fit(data, epochs=20, batch=64)`, then `trainer.weights` (name ->
    numpy array) or `trainer.save(path)`.
    """

    def __init__(self, source: Source, target: str = "torch", *, optimizer: str | Optimizer = "adamw",
                 lr: float = 1e-3, schedule: str = "constant", warmup: int = 0, total_steps: int = 0,
                 clip_norm: float | None = None, device: str = "cpu", seed: int = 0, model: str | None = None,
                 weights: Mapping[str, np.ndarray] | None = None, precision: str = "f32", **params: Any):
        self.source, self.target, self.device, self.seed = source, target, device, seed
        self.model_name, self.model_params = model, params
        self.optimizer = optimizer if isinstance(optimizer, Optimizer) else Optimizer.named(optimizer)
        total = max(1, total_steps - warmup)
        # step: x0.1 after a third and two thirds of the steps (the ResNet recipe's shape)
        self.schedule = Schedule(schedule, lr, total=total, warmup=warmup, step_size=-(-total // 3))
        self.loss_graph = parse(source, model, method="loss", **params)
        self._check_loss(self.loss_graph)
        classes = next((n.operands[0].shape[1] for n in self.loss_graph.nodes if n.op == "cross_entropy"), None)
        self._classes = classes if isinstance(classes, int) else None  # the labels' range, where it is known
        self._kinds_taken: set[tuple] = set()  # the shapes and dtypes of batches checked (`_batch`)
        self.inference_loss = clone(self.loss_graph)  # the loss as evaluation computes it: the user's inputs
        self.mode = to_training(self.loss_graph)  # the buffers its extra outputs update, its dropout masks
        self.scaler = LossScaler() if precision == "f16" else None
        if self.scaler:
            scale_loss(self.loss_graph)
        self.precision = precision
        options = {**autocast_options(target, precision), **get_target(target).training_options}
        loss = compile(self.loss_graph, target, weights=weights, seed=seed, options=options,
                       pass_options={"training": True})
        self._initial = dict(loss.weights)
        self._statistics: dict[str, Any] = {}  # the running statistics the last step left (tensors)
        self._evaluators: tuple[Any, Any] | None = None  # forward and the inference loss, compiled once
        exe = loss.load(device=device)
        self._program, self._model = exe.module, exe._model
        trained = self._program.parameters(self._model)
        types = {p.name: p.type for p in self.loss_graph.params if p.name in trained}
        self._sizes = {k: math.prod(types[k].shape) for k in trained}  # the params' order and sizes in the flat vector
        flat = _flat_type(types, self.loss_graph)
        # the rates and bias corrections in f64 for f64 params (torch.optim's are Python floats)
        self._scalar_dtype = DType.f64 if flat.dtype is DType.f64 else DType.f32
        self.update = update_graph(self.optimizer, {"params": flat}, self._scalar_dtype, clip_norm=clip_norm,
                                   loss_scaled=self.scaler is not None)
        updater = compile(self.update.graph, target, opt=3).load(device=device)
        self._update = updater.module.as_function(updater._model)
        self.state = [self._tensor(np.zeros(sum(self._sizes.values()), types[next(iter(types))].dtype.numpy))
                      for _ in self.optimizer.state]
        self.step_count, self.epoch = 0, 0

    @staticmethod
    def _check_loss(graph: Graph) -> None:
        out = graph.outputs
        if len(out) != 1 or out[0].type.rank != 0 or not out[0].dtype.is_float:
            raise ShipeiError(f"the loss of {graph.name} must be one float scalar, got "
                              f"{', '.join(str(v.type) for v in out)}", graph.loc)

    def _tensor(self, array: np.ndarray) -> Any:
        return self._program.accept(np.asarray(array), self.device)[0]

    # -- training ---------------------------------------------------------------------------
    def step(self, *batch: np.ndarray, lr: float | None = None) -> float:
        """One optimizer step on one batch, an array per input of the loss (examples x and labels
        y; numpy in, checked as `fit` checks its data), at the schedule's rate or `lr`; the batch's
        loss before it."""
        lr = None if lr is None else real_number(lr, "the learning rate", 0.0, open_low=False)
        return self._step(*self._batch(batch, "the batch's", ""), lr=lr)

    def _step(self, *inputs: np.ndarray, lr: float | None = None) -> float:
        """`step` on a batch already checked."""
        self.step_count += 1
        lr = self.schedule.rate(self.step_count - 1) if lr is None else lr
        taken = self.step_count - (self.scaler.skipped if self.scaler else 0)  # the optimizer's own count
        scalars = [self._scalar_dtype.numpy.type(v) for v in self.optimizer.scalars(lr, taken).values()]
        inputs = tuple(map(np.asarray, inputs))
        extra = (self.mode.draw_masks(bind_symbols(self.inference_loss, inputs), self.seed, self.step_count)
                 if self.mode.masks else [])
        if self.scaler:
            scalars.append(self._scalar_dtype.numpy.type(1 / self.scaler.scale))
            extra.append(np.float32(self.scaler.scale))
        (loss, *statistics), state = self._program.train_step(self._model, self._update, self.state, scalars,
                                                              *inputs, *extra)
        if statistics:
            self._statistics = dict(zip(self.mode.updates, statistics, strict=True))
            self._program.assign(self._model, self._statistics)
        value = float(self._program.to_numpy(loss))
        if self.scaler:
            *state, finite = state
            value /= self.scaler.scale
            if not self.scaler.update(bool(self._program.to_numpy(finite))):
                return value  # skipped: the gradients overflowed float16, and the scale is lowered
        self.state = list(state)
        if not math.isfinite(value):
            raise ShipeiError(f"the loss is {value} at step {self.step_count}",
                              hint="lower the learning rate, or clip gradients (--clip-norm)")
        return value

    def fit(self, data: Dataset, epochs: int, batch: int, progress: Callable[[str], None] | None = None,
            checkpoint: str | Path | None = None) -> History:
        """`epochs` passes over the training set in shuffled batches of `batch` (the last one
        short); after each, the held-out loss and accuracy (and a checkpoint, where asked)."""
        batch, epochs = whole_number(batch, "batch", least=1), whole_number(epochs, "epochs")
        data = self.checked(data)
        history = History()
        while self.epoch < epochs:
            start = time.perf_counter()
            # each epoch's order from the seed and the epoch alone: a resumed run draws the same
            order = np.random.default_rng((self.seed, self.epoch)).permutation(len(data.x_train))
            losses = []
            batches = range(0, len(order), batch)
            for n, at in enumerate(batches, 1):
                idx = order[at:at + batch]
                losses.append(self._step(data.x_train[idx], data.y_train[idx]))
                if progress:
                    progress(f"epoch {self.epoch + 1}/{epochs}  batch {n}/{len(batches)}  loss {losses[-1]:.4f}")
            self.epoch += 1
            val_loss, accuracy = self.evaluate(data.x_val, data.y_val)
            history.rows.append({"epoch": self.epoch, "loss": float(np.mean(losses)), "val_loss": val_loss,
                                 "val_accuracy": accuracy, "seconds": time.perf_counter() - start,
                                 "lr": self.schedule.rate(self.step_count)})
            if checkpoint is not None:
                self.save(checkpoint)
        return history

    def checked(self, data: Dataset) -> Dataset:
        """`data` as the loss takes it, each part checked and cast once (`_batch`)."""
        if not isinstance(data, Dataset):
            raise ShipeiError(f"training data must be a shipei Dataset, got {type(data).__name__}",
                              hint="Dataset(x_train, y_train, x_val, y_val), Dataset.split(x, y, seed, held_out) "
                                   "or Dataset.load(path)")
        parts = {}
        for part in ("train", "val"):
            pair = (getattr(data, f"x_{part}"), getattr(data, f"y_{part}"))
            parts[f"x_{part}"], parts[f"y_{part}"] = self._batch(pair, "the data's", f"_{part}")
        return Dataset(**parts)

    def _batch(self, arrays: Sequence[Any], owner: str, part: str) -> list[np.ndarray]:
        """A batch as the loss takes it, an array per input: as many examples in each and at least
        one, of its shapes, finite features, labels within its classes, cast to its dtypes (float64
        features to float32, big-endian to native: `ir.interpreter.coerce_input`'s checks) and laid
        out in order. Named in errors as `owner` x`part`: "the data's x_train". What a batch's
        shapes and dtypes decide is checked once for them (a step's checks: ~15 us)."""
        inputs = self.inference_loss.inputs
        names = [f"{n}{part}" for n in (("x", "y") if len(inputs) == 2 else [v.name for v in inputs])]
        if len(arrays) != len(inputs):
            raise ShipeiError(f"{self.loss_graph.name}'s loss takes {len(inputs)} array{'s' * (len(inputs) != 1)} a "
                              f"batch ({', '.join(names)}), got {len(arrays)}")
        arrays = [np.asarray(a) for a in arrays]
        kind = tuple((a.shape, a.dtype) for a in arrays)
        if kind not in self._kinds_taken:
            self._check_shapes(arrays, names, owner)
            if len(self._kinds_taken) >= 64:
                self._kinds_taken.clear()
            self._kinds_taken.add(kind)
        cast = []
        for name, value, array in zip(names, inputs, arrays):
            try:
                cast.append(coerce_input(value, array))
            except ShipeiError as e:  # a number the cast would change
                raise ShipeiError(f"{owner} {name}: {e.message}") from None
        for name, x in zip(names, cast):
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                raise ShipeiError(f"{owner} {name} holds {np.count_nonzero(~np.isfinite(x))} NaN or infinite values",
                                  hint="training on them gives a NaN loss: drop or impute them")
        y = cast[-1]
        if self._classes is not None and len(cast) == 2 and y.size and (y.min() < 0 or y.max() >= self._classes):
            raise ShipeiError(f"{owner} {names[1]} holds labels from {y.min()} to {y.max()}, outside the "
                              f"model's {self._classes} classes [0, {self._classes})")
        return cast

    def _check_shapes(self, arrays: list[np.ndarray], names: list[str], owner: str) -> None:
        """What a batch's shapes and dtypes decide: of dtypes the loss can take, of its shapes (its
        symbols alike in every array), as many examples in each and at least one."""
        graph = self.inference_loss
        for name, array, value in zip(names, arrays, graph.inputs):
            want = value.type
            if not np.can_cast(array.dtype, want.dtype.numpy, "same_kind") or array.dtype.kind in "OSUMmc":
                raise ShipeiError(f"{owner} {name} is {array.dtype}, which {self.loss_graph.name}'s "
                                  f"{want} input cannot take")
            if array.ndim != want.rank or any(isinstance(w, int) and w != d for d, w in zip(array.shape, want.shape)):
                raise ShipeiError(f"{owner} {name} has examples of shape {list(array.shape[1:])}, "
                                  f"but {self.loss_graph.name} takes {want}")
        lengths = [len(a) for a in arrays]
        if not all(lengths) or len(set(lengths)) > 1:
            raise ShipeiError(f"{owner} {' and '.join(names)} hold {' and '.join(map(str, lengths))} examples",
                              hint="training needs at least one example to train on and one held out"
                              if owner == "the data's" else "give as many labels as examples, at least one")
        try:  # and shape symbols of one value in every array (a sequence's length T)
            bind_symbols(graph, arrays)
        except ShipeiError as e:
            raise ShipeiError(f"{owner} {' and '.join(names)}: {e.message}") from None

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int = 512) -> tuple[float, float]:
        """The mean loss and the accuracy (argmax of forward) on held-out data, as at inference
        (batch norm by its running statistics)."""
        batch = whole_number(batch, "batch", least=1)
        x, y = self._batch((x, y), "the held-out", "")
        weights = self.weights
        if self._evaluators is None:
            self._evaluators = (
                compile(self.source, self.target, model=self.model_name, weights=weights,
                        **self.model_params).load(device=self.device),
                compile(self.inference_loss, self.target, weights=weights).load(device=self.device))
        forward, loss_fn = self._evaluators
        forward.load_weights(weights)
        loss_fn.load_weights(weights)
        loss, hits = 0.0, 0
        for at in range(0, len(x), batch):
            xs, ys = x[at:at + batch], y[at:at + batch]
            logits = forward.run(xs)[0]
            hits += int((np.argmax(logits, axis=-1) == ys).sum())
            loss += float(loss_fn.run(xs, ys)[0]) * len(xs)
        return loss / len(x), hits / len(x)

    def _unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """A flat vector of the optimizer's (a state slot) as one array per param, by name."""
        shapes = {p.name: tuple(p.shape) for p in self.loss_graph.params}
        cuts = np.cumsum(list(self._sizes.values()))[:-1]
        return {k: np.ascontiguousarray(part.reshape(shapes[k]))
                for k, part in zip(self._sizes, np.split(flat, cuts), strict=True)}

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """Every param (buffers included) as numpy arrays, by name."""
        trained = self._program.parameters(self._model) | self._statistics
        return {**self._initial, **{k: np.asarray(self._program.to_numpy(v)) for k, v in trained.items()}}

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Params, optimizer state, step and settings in one safetensors file (written whole to a
        temporary file first, so a failure leaves the last checkpoint as it was)."""
        path = writable_file(path, "checkpoint", replaced=True)
        arrays = {f"param.{k}": np.ascontiguousarray(v) for k, v in self.weights.items()}
        for slot, flat in zip(self.optimizer.state, self.state, strict=True):
            arrays |= {f"state.{k}.{slot}": v for k, v in self._unflatten(self._program.to_numpy(flat)).items()}
        meta = {"format": CHECKPOINT_FORMAT, "model": self.loss_graph.name, "step": str(self.step_count),
                "epoch": str(self.epoch), "optimizer": json.dumps(dataclasses.asdict(self.optimizer)),
                "schedule": json.dumps(dataclasses.asdict(self.schedule)), "target": self.target}
        if self.scaler:
            meta["loss_scaler"] = json.dumps(dataclasses.asdict(self.scaler))
        tmp = path.with_name(path.name + ".tmp")
        try:
            safetensors.numpy.save_file(arrays, str(tmp), metadata=meta)
            tmp.replace(path)
        except (OSError, safetensors.SafetensorError) as e:
            raise ShipeiError(f"cannot write checkpoint {path}: {e}") from None
        return path

    @classmethod
    def resume(cls, path: str | Path, source: Source, target: str = "torch", **kwargs: Any) -> Trainer:
        """A trainer continuing a checkpoint, on `target` (any: tensors are numpy in the file)."""
        arrays, meta = _read_checkpoint(path)
        optimizer, settings, step, epoch = _checkpoint_settings(meta, path)
        weights = {k.removeprefix("param."): v for k, v in arrays.items() if k.startswith("param.")}
        trainer = cls(source, target, optimizer=optimizer, **settings,
                      weights=_matching(weights, source, path, kwargs), **kwargs)
        if trainer.loss_graph.name != meta.get("model"):
            raise ShipeiError(f"checkpoint {path} is of model {meta.get('model')}, not {trainer.loss_graph.name}")
        shapes = {p.name: tuple(p.shape) for p in trainer.loss_graph.params}
        for i, slot in enumerate(trainer.optimizer.state):
            keys = {k: f"state.{k}.{slot}" for k in trainer._sizes}
            if wrong := [key for k, key in keys.items() if key not in arrays or arrays[key].shape != shapes[k]]:
                raise ShipeiError(f"checkpoint {path} has no optimizer state {', '.join(wrong)} of its param's shape")
            trainer.state[i] = trainer._tensor(np.concatenate([arrays[key].reshape(-1) for key in keys.values()]))
        trainer.step_count, trainer.epoch = step, epoch
        if trainer.scaler and "loss_scaler" in meta:
            trainer.scaler = LossScaler(**json.loads(meta["loss_scaler"]))
        return trainer


@dataclass
class RangeTest:
    """A learning-rate range test (fastai's lr_find, Lightning's Tuner.lr_find): the loss of each
    step as the rate grows exponentially, smoothed, and the suggested rate."""

    rates: list[float]
    losses: list[float]  # smoothed: an exponential moving average (0.98), bias-corrected
    suggestion: float
    stopped: str

    def table(self, rows: int = 12) -> list[str]:
        picks = sorted({round(i * (len(self.rates) - 1) / max(1, rows - 1)) for i in range(rows)})
        return ["lr          loss"] + [f"{self.rates[i]:<10.3g}  {self.losses[i]:.4f}" for i in picks]

    def plot(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.rates, self.losses)
        ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggested {self.suggestion:.3g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="learning-rate range test")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path)


def lr_range_test(trainer: Trainer, data: Dataset, batch: int, steps: int = 100, lr_min: float = 1e-6,
                  lr_max: float = 1.0) -> RangeTest:
    """Steps at rates from `lr_min` to `lr_max`, growing by the same factor each step, on
    shuffled batches, until the smoothed loss passes 4 times its best (it diverged). The
    suggestion is the rate where the smoothed loss falls fastest against log(rate), as Lightning
    suggests; the params are trained along the way, so use a fresh trainer afterwards."""
    batch, steps = whole_number(batch, "batch", least=1), whole_number(steps, "steps", least=4)
    if not 0 < lr_min < lr_max < math.inf:
        raise ShipeiError(f"the range test needs 0 < lr_min < lr_max, got {lr_min} and {lr_max}")
    data = trainer.checked(data)
    factor = (lr_max / lr_min) ** (1 / (steps - 1))
    rng = np.random.default_rng(trainer.seed)
    order = np.concatenate([rng.permutation(len(data.x_train)) for _ in range(steps * batch // len(data.x_train) + 1)])
    rates, losses, average, best, stopped = [], [], 0.0, math.inf, f"after {steps} steps"
    for t in range(steps):
        lr = lr_min * factor**t
        idx = order[t * batch:(t + 1) * batch]
        try:
            loss = trainer._step(data.x_train[idx], data.y_train[idx], lr=lr)
        except ShipeiError:  # the loss is no longer finite
            stopped = f"at lr {lr:.3g}: the loss is not finite"
            break
        average = 0.98 * average + 0.02 * loss
        smoothed = average / (1 - 0.98 ** (t + 1))
        rates.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if t > 3 and smoothed > 4 * best:
            stopped = f"at lr {lr:.3g}: the loss passed 4 times its best"
            break
    if len(rates) < 4:
        raise ShipeiError(f"the range test stopped after {len(rates)} steps ({stopped})", hint="lower --lr-min")
    slopes = np.gradient(np.asarray(losses), np.log(rates))
    return RangeTest(rates, losses, rates[int(np.argmin(slopes))], stopped)


@dataclass
class LossScaler:
    """Dynamic loss scaling for float16 training, torch.amp.GradScaler's with its defaults: the
    loss is multiplied by `scale` before the gradients; a step whose gradients overflow is skipped
    and halves the scale, and `growth_interval` steps in a row without overflow double it."""

    scale: float = 2.0**16
    growth_interval: int = 2000
    good: int = 0  # steps taken since the scale last changed
    skipped: int = 0

    def update(self, finite: bool) -> bool:
        """Account for a step whose gradients were `finite` (else it was skipped); that flag."""
        if not finite:
            self.scale, self.good, self.skipped = self.scale / 2, 0, self.skipped + 1
        else:
            self.good += 1
            if self.good == self.growth_interval:
                self.scale, self.good = self.scale * 2, 0
        return finite


def autocast_options(target: str, precision: str) -> dict[str, Any]:
    """The emit options that train on `target` in `precision`: none for f32; for a 16-bit dtype,
    mixed precision (matmul and convolution in it, params and their updates in f32) where the
    target offers it (`Target.autocast`)."""
    from .codegen import TARGETS, get_target

    if precision == "f32":
        return {}
    offered = get_target(target).autocast
    dtype = next((d for d in DType if d.value == precision), None)
    if dtype not in offered:
        where = ", ".join(t for t in TARGETS if dtype in get_target(t).autocast) or "none"
        raise ShipeiError(f"{target} does not train in {precision} mixed precision",
                          hint=f"--precision f32, or a target that does ({precision}: {where})")
    return offered[dtype]


def _flat_type(types: Mapping[str, TensorType], graph: Graph) -> TensorType:
    """The type of all trainable params as one vector: the optimizer updates them at once."""
    dtypes = {t.dtype for t in types.values()}
    if len(dtypes) != 1:
        raise ShipeiError(f"the trainable params of {graph.name} are of dtypes {', '.join(sorted(map(str, dtypes)))}",
                          graph.loc, hint="training takes params of one dtype")
    return TensorType(dtypes.pop(), (sum(math.prod(t.shape) for t in types.values()),))


def _read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:  # noqa: BLE001 - a missing file, or safetensors' own error for a corrupt one
        raise ShipeiError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ShipeiError(f"{path} is not a shipei checkpoint", hint="write one with shipei train --checkpoint")
    return arrays, meta


def _checkpoint_settings(meta: Mapping[str, str], path: str | Path) -> tuple[Optimizer, dict[str, Any], int, int]:
    """The optimizer, the schedule's settings (as `Trainer` takes them), the step and the epoch a
    checkpoint's metadata records, each checked: it is a file a user may have edited."""
    try:
        optimizer = Optimizer(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in json.loads(meta["optimizer"]).items()})
        schedule = json.loads(meta["schedule"])
        settings = {"lr": float(schedule["lr"]), "schedule": str(schedule["name"]), "warmup": int(schedule["warmup"]),
                    "total_steps": int(schedule["total"]) + int(schedule["warmup"])}
        step, epoch = int(meta["step"]), int(meta["epoch"])
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ShipeiError(f"checkpoint {path}: its metadata does not say how to resume "
                          f"({type(e).__name__}: {e})", hint="write one with shipei train --checkpoint") from None
    if not 0 <= epoch <= step:
        raise ShipeiError(f"checkpoint {path} says epoch {epoch} at step {step}",
                          hint="a checkpoint's epochs are at least one step each")
    return optimizer, settings, step, epoch


def _matching(weights: dict[str, np.ndarray], source: Source, path: str | Path,
              kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The checkpoint's params, if they are exactly the model's (names, shapes, dtypes)."""
    params = {k: v for k, v in kwargs.items() if k not in _TRAINER_KEYWORDS}
    graph = parse(source, kwargs.get("model"), method="loss", **params)
    want = {p.name: (tuple(p.shape), p.dtype.numpy) for p in graph.params}
    have = {k: (tuple(v.shape), v.dtype) for k, v in weights.items()}
    if want != have:
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        changed = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        raise ShipeiError(f"checkpoint {path} is not of this model: missing {missing}, unexpected {extra}, "
                          f"of another shape {changed}")
    return weights


_TRAINER_KEYWORDS = {"clip_norm", "device", "seed", "model", "precision"}


def print_progress(text: str) -> None:
    """A training progress line, rewritten in place on a terminal."""
    if sys.stderr.isatty():
        print(f"\r{text:<70}", end="", file=sys.stderr, flush=True)
