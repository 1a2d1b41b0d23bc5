"""Epoch callbacks: divergence guard, epoch commit, RNG state capture, history CSV, atomic model saves."""

import csv
import io
import json

import keras
import numpy as np
import pytest

from inception_keras.callbacks import (EpochRecorder, StopOnNonFiniteLoss, history_csv, restore_rng_states,
                                       rng_states, save_model_atomically)
from inception_keras.runs import RunDir, RunState


def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.5, name="drop"), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_non_finite_loss_stops_training_and_the_epoch_is_not_committed(tmp_path):
    model = tiny_model()
    model.compile("sgd", "mse", metrics=["mae"])
    x = np.ones((32, 4), "float32")
    y = np.zeros((32, 3), "float32")
    y[20:] = np.inf  # batches 3 and 4 of epoch 1 (batch size 8) make the loss infinite
    run = RunDir(tmp_path / "run")
    guard = StopOnNonFiniteLoss()
    recorder = EpochRecorder(run, RunState(), "val_mae", save_best=lambda m: None, ema=False)
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, validation_data=(x[:8], y[:8]),
              callbacks=[guard, recorder], verbose=0)
    assert guard.where == (1, 3)  # epoch 1, step 3: where the running loss first became inf
    assert not run.has_progress() and not run.file("history.csv").exists()


def test_an_epoch_with_a_nan_validation_loss_is_neither_committed_nor_saved_as_best(tmp_path):
    model = tiny_model()
    model.compile("sgd", "mse", metrics=["mae"])
    x = np.ones((16, 4), "float32")
    y = np.zeros((16, 3), "float32")
    y_val = np.full((8, 3), np.nan, "float32")  # training losses finite, the validation loss NaN
    run, best = RunDir(tmp_path / "run"), []
    guard = StopOnNonFiniteLoss()
    recorder = EpochRecorder(run, RunState(), "val_mae", save_best=best.append, ema=False)
    history = model.fit(x, y, batch_size=8, epochs=3, validation_data=(x[:8], y_val),
                        callbacks=[guard, recorder], verbose=0)
    assert len(history.history["loss"]) == 1  # stopped after epoch 1
    assert guard.where == (1, None) and guard.describe() == "the validation loss became NaN/inf by the end of epoch 1"
    assert best == [] and not run.has_progress() and not run.file("history.csv").exists()


class PoisonLastBatch(keras.callbacks.Callback):
    """Make a weight NaN after the last batch of epoch ``epoch`` (as a diverging last update would)."""

    def __init__(self, epoch, batches):
        super().__init__()
        self.epoch, self.batches, self.current = epoch, batches, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batches - 1:
            kernel = self.model.layers[0].kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_an_epoch_whose_last_update_made_the_weights_nan_is_not_committed(tmp_path):
    model = tiny_model()
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    run, state, best = RunDir(tmp_path / "run"), RunState(), []
    guard = StopOnNonFiniteLoss()
    recorder = EpochRecorder(run, state, "accuracy", save_best=best.append, ema=False)
    model.fit(x, y, batch_size=8, epochs=3, callbacks=[PoisonLastBatch(1, 2), guard, recorder], verbose=0)
    assert guard.where == (2, None) and guard.what == "weights"  # every logged loss of epoch 2 was finite
    saved = run.load_state()
    assert saved.epochs_done == 1 and [r["epoch"] for r in saved.history] == [1] and len(best) == 1
    assert saved.checkpoint == "epoch-0001.keras"


def test_epoch_recorder_commits_best_checkpoint_history_and_rng(tmp_path):
    model = tiny_model()
    x = np.random.default_rng(0).normal(size=(24, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    run, state, best = RunDir(tmp_path / "run"), RunState(), []
    recorder = EpochRecorder(run, state, "val_accuracy", save_best=lambda m: best.append(len(state.history)),
                             ema=False)
    model.fit(x, y, epochs=3, batch_size=8, validation_data=(x, y), callbacks=[recorder], verbose=0)
    saved = run.load_state()
    assert saved.epochs_done == 3 and [r["epoch"] for r in saved.history] == [1, 2, 3]
    assert saved.best_epoch == 1 + int(np.argmax([r["val_accuracy"] for r in saved.history]))
    assert best[0] == 0  # the first epoch is always a new best
    assert saved.rng_states == {"drop": keras.ops.convert_to_numpy(model.get_layer("drop").seed_generator.state).tolist()}
    rows = list(csv.DictReader(io.StringIO(run.file("history.csv").read_text())))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and "learning_rate" in rows[0]
    assert float(rows[2]["loss"]) == pytest.approx(saved.history[2]["loss"])
    assert json.loads((run.checkpoint_dir / "state.json").read_text())["checkpoint"] == "epoch-0003.keras"


def test_rng_states_round_trip_by_layer_name():
    model, other = tiny_model(), tiny_model()
    model.get_layer("drop").seed_generator.state.assign([7, 11])
    restore_rng_states(other, rng_states(model))
    assert rng_states(other) == {"drop": [7, 11]}
    with pytest.raises(ValueError, match="random states"):
        restore_rng_states(other, {"pool5_drop": [1, 2]})


def test_history_csv_puts_epoch_first_and_keeps_full_precision():
    text = history_csv([{"epoch": 1, "loss": 0.1234567891, "acc": 0.5}, {"epoch": 2, "loss": 0.1, "acc": 0.75}])
    assert text.splitlines()[0] == "epoch,acc,loss"
    assert text.splitlines()[1] == "1,0.5,0.1234567891"


def test_failed_model_save_leaves_the_previous_file(tmp_path, monkeypatch):
    model = tiny_model()
    path = tmp_path / "model.keras"
    save_model_atomically(model, path)
    good = path.read_bytes()

    def crash(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 truncated")
        raise OSError("killed mid-write")

    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(OSError):
        save_model_atomically(model, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    keras.models.load_model(path)
