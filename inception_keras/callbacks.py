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


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first batch whose running loss is NaN/inf and remember where it happened.

    Unlike ``keras.callbacks.TerminateOnNaN`` it records the epoch and step, so the
    trainer can say where the run diverged; :class:`EpochRecorder` refuses to
    commit that epoch, so the last good checkpoint is kept.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.where: tuple[int, int] | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch + 1, batch + 1)
            self.model.stop_training = True


class EpochRecorder(keras.callbacks.Callback):
    """At each epoch end: save the best model, commit the resume checkpoint, rewrite history.csv.

    Place it after ``SwapEMAWeights(swap_on_epoch=True)`` when EMA is on, so the
    best model holds the averaged weights (the paper's Polyak averaging).
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
        if not math.isfinite(float(logs.get("loss", float("nan")))):
            return  # diverged: keep the last good checkpoint
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
