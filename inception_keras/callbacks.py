"""Keras callbacks that make a training run safe to interrupt and to read afterwards."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import keras

from .optim import current_learning_rate
from .runs import RunDir, RunState, atomic_path, write_text


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def weights_are_finite(model: keras.Model) -> bool:
    """Whether every floating-point weight of ``model`` (trainable or not, e.g. BatchNorm statistics) is finite."""
    return all(bool(keras.ops.all(keras.ops.isfinite(w))) for w in model.weights
               if "float" in str(w.dtype))


def non_finite_at_epoch_end(logs: dict | None, model: keras.Model) -> str | None:
    """What is NaN/inf at the end of an epoch: a logged value's name (``loss``, ``val_loss``, ...), ``weights``,
    or None when the epoch is sound.

    The training loss of a batch is computed before that batch's update, so the
    last update of an epoch shows only in the validation loss and the weights.
    """
    logs = logs or {}
    for key in sorted(logs, key=lambda k: (k != "loss", k != "val_loss", k)):  # the total losses first
        if not math.isfinite(float(logs[key])):
            return key
    return None if weights_are_finite(model) else "weights"


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first batch whose running loss is NaN/inf, or at the end of an epoch whose validation loss,
    metrics or weights are, and remember where it happened.

    Unlike ``keras.callbacks.TerminateOnNaN`` it records the epoch, the step
    (None when found at the epoch's end) and what was non-finite, so the trainer
    can say where the run diverged; :class:`EpochRecorder` refuses to commit
    that epoch, so the last good checkpoint is kept.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.where: tuple[int, int | None] | None = None
        self.what: str | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where, self.what = (self.epoch + 1, batch + 1), "loss"
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.where is not None:
            return
        what = non_finite_at_epoch_end(logs, self.model)
        if what is not None:
            self.where, self.what = (epoch + 1, None), what
            self.model.stop_training = True

    def describe(self) -> str:
        """Where the run diverged, e.g. 'the training loss became NaN/inf at epoch 2, step 1'."""
        if self.where is None:
            return "nothing became NaN/inf"
        epoch, step = self.where
        if step is not None:
            return f"the training loss became NaN/inf at epoch {epoch}, step {step}"
        what = {"weights": "the weights", "loss": "the training loss",
                "val_loss": "the validation loss"}.get(self.what, self.what)
        return f"{what} became NaN/inf by the end of epoch {epoch}"


class EpochRecorder(keras.callbacks.Callback):
    """At each epoch end: save the best model, commit the resume checkpoint, rewrite history.csv.

    Place it after ``SwapEMAWeights(swap_on_epoch=True)`` when EMA is on, so the
    best model holds the averaged weights (the paper's Polyak averaging).
    An epoch with a NaN/inf loss, validation value or weight is never committed
    (nor saved as the best model) and stops training.
    The order of writes makes the resume state consistent at every instant:
    best model, then checkpoint + ``state.json`` (the commit), then the CSV
    rebuilt from the committed history.
    """

    def __init__(self, run_dir: RunDir, state: RunState, monitor: str, save_best, ema: bool):
        super().__init__()
        self.run_dir = run_dir
        self.state = state
        self.monitor = monitor
        self.save_best = save_best
        self.ema = ema

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        if "loss" not in logs or non_finite_at_epoch_end(logs, self.model) is not None:
            self.model.stop_training = True
            return  # diverged (even if only by the epoch's last update): keep the last good checkpoint
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
               "learning_rate": current_learning_rate(self.model.optimizer)}
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(f"metric {self.monitor!r} is not in the epoch logs {sorted(logs)}")
        if self.state.best_metric is None or value > self.state.best_metric:
            self.save_best(self.model)
            self.state.best_metric, self.state.best_epoch = float(value), epoch + 1
        self.state.epochs_done = epoch + 1
        self.state.history.append(row)
        self.state.ema_weights_in_model = self.ema
        self.state.rng_states = rng_states(self.model)
        self.run_dir.commit_epoch(self.state, lambda path: self.model.save(path))
        write_text(self.run_dir.file("history.csv"), history_csv(self.state.history))


def seed_generators(model: keras.Model) -> dict[str, keras.random.SeedGenerator]:
    """The random seed generators of the model's layers (dropout), keyed by layer name.

    ``model.save`` does not store their state, so a resumed run restores it from
    the run state; otherwise its dropout masks would differ from an uninterrupted
    run's.  Keyed by the stable layer names: the generators' own variable names
    depend on how many were created before in the process.
    """
    return {layer.name: layer.seed_generator for layer in model.layers
            if isinstance(getattr(layer, "seed_generator", None), keras.random.SeedGenerator)}


def rng_states(model: keras.Model) -> dict[str, list[int]]:
    """The state of every layer's seed generator, as JSON-friendly lists."""
    return {name: keras.ops.convert_to_numpy(g.state).tolist() for name, g in seed_generators(model).items()}


def restore_rng_states(model: keras.Model, states: dict[str, list[int]]) -> None:
    """Put back states saved with :func:`rng_states`."""
    generators = seed_generators(model)
    if set(generators) != set(states):
        raise ValueError(f"the checkpoint has random states for {sorted(states)}, the model for {sorted(generators)}")
    for name, state in states.items():
        generators[name].state.assign(state)


def history_csv(rows: list[dict[str, Any]]) -> str:
    """The history as CSV text, ``epoch`` first, then every other column sorted."""
    columns = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def save_model_atomically(model: keras.Model, path) -> None:
    """``model.save`` through a temporary file, so a kill never leaves a truncated model."""
    with atomic_path(path) as tmp:
        model.save(tmp)
