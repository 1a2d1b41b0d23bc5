"""The training command end to end on the bundled sample, with a tiny budget."""

import csv
import json
import math

import keras
import numpy as np
import pytest
from PIL import Image

from inception_keras import train as train_module
from inception_keras.data import DataConfig, load_data
from inception_keras.errors import UserError

TINY = ["--epochs", "2", "--max-train-batches", "3", "--max-val-batches", "2", "--batch-size", "32",
        "--image-size", "32", "--seed", "7", "--verbose", "epoch"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run of the real command on the bundled sample (shared by the artifact checks)."""
    out = tmp_path_factory.mktemp("runs")
    summary = train_module.main(TINY + ["--output-dir", str(out), "--name", "tiny"])
    assert summary == 0
    return out / "tiny"


def read_history(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_run_directory_has_every_artifact_and_they_are_readable(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "model.keras", "inference.keras", "history.csv", "logs", "curves.png",
            "report.md", "report.csv", "report.json", "summary.json"} <= names
    assert "checkpoint" not in names  # resume state is cleared once the run is finished

    config = json.loads((tiny_run / "config.json").read_text())
    assert config["epochs"] == 2 and config["data"]["seed"] == 7 and config["model"]["variant"] == "bn"
    assert config["versions"]["keras"] == keras.__version__ and config["num_classes"] == 10

    rows = read_history(tiny_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for column in ("loss", "main_loss", "aux1_loss", "aux2_loss", "main_accuracy", "aux1_accuracy",
                   "aux2_accuracy", "val_loss", "val_main_accuracy", "val_aux2_accuracy", "learning_rate"):
        assert all(math.isfinite(float(r[column])) for r in rows), column

    with Image.open(tiny_run / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert list((tiny_run / "logs").rglob("events.out.tfevents.*"))
    assert "T-shirt/top" in (tiny_run / "report.md").read_text()

    model = keras.models.load_model(tiny_run / "model.keras", safe_mode=True)
    assert model.output_names == ["main", "aux1", "aux2"]
    inference = keras.models.load_model(tiny_run / "inference.keras", safe_mode=True)
    assert inference.output_names == ["main"]


@pytest.mark.slow
def test_summary_matches_the_saved_model_and_history(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    rows = read_history(tiny_run)
    best = max(rows, key=lambda r: float(r["val_main_accuracy"]))
    assert summary["best_epoch"] == int(best["epoch"]) and summary["epochs"] == len(rows) == 2
    assert summary["best_val_accuracy"] == pytest.approx(float(best["val_main_accuracy"]))

    config = json.loads((tiny_run / "config.json").read_text())
    bundle = load_data(DataConfig(**config["data"]))
    inference = keras.models.load_model(tiny_run / "inference.keras")
    probs = inference.predict(bundle.eval_dataset("test"), verbose=0)
    accuracy = float(np.mean(probs.argmax(-1) == bundle.labels("test")))
    assert summary["splits"]["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert set(summary["splits"]) == {"train", "val", "test"}


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tiny_run, tmp_path):
    train_module.main(TINY + ["--output-dir", str(tmp_path), "--name", "again"])
    first, second = read_history(tiny_run), read_history(tmp_path / "again")
    assert first == second
    summary = lambda d: json.loads((d / "summary.json").read_text())["splits"]  # noqa: E731
    assert summary(tiny_run) == summary(tmp_path / "again")


@pytest.mark.slow
def test_finished_run_is_not_overwritten(tiny_run, capsys):
    before = (tiny_run / "summary.json").read_bytes()
    with pytest.raises(UserError, match="finished run; pass --overwrite"):
        train_module.main(TINY + ["--output-dir", str(tiny_run.parent), "--name", "tiny"])
    assert (tiny_run / "summary.json").read_bytes() == before


def test_recipes_and_explicit_options_resolve_in_order():
    config = train_module.config_from_args(["--recipe", "paper", "--lr", "0.02", "--no-aux-heads"])
    assert config.model.variant == "paper" and config.optim.optimizer == "sgd"
    assert config.optim.schedule == "paper" and config.optim.ema is True and config.data.image_size == 224
    assert config.optim.learning_rate == 0.02 and config.model.aux_heads is False
    default = train_module.config_from_args([])
    assert default == train_module.TrainConfig()
    assert default.run_name == "sample_bn_32px"


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in train_module.OPTIONS:
        assert option.flag in text
    assert "(default: 12)" in text and "(default: adamw)" in text


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--variant", "v3"], "invalid choice"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in"),
])
def test_bad_options_are_user_errors_and_write_nothing(argv, message, tmp_path):
    with pytest.raises(UserError, match=message):
        train_module.main(argv + ["--output-dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()
