"""The training command end to end on the bundled sample, with a tiny budget."""

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from inception_keras import train as train_module
from inception_keras.data import DataConfig, load_data
from inception_keras.errors import UserError

from helpers import TINY, kill_after_epoch, read_history

@pytest.mark.slow
def test_run_directory_has_every_artifact_and_they_are_readable(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "model.keras", "inference.keras", "history.csv", "logs", "curves.png",
            "report.md", "report.csv", "report.json", "summary.json"} <= names
    assert "checkpoint" not in names  # resume state is cleared once the run is finished

    config = json.loads((tiny_run / "config.json").read_text())
    assert config["epochs"] == 2 and config["data"]["seed"] == 7 and config["model"]["variant"] == "bn"
    assert config["optim"]["ema"] is True and config["replicas"] == 1
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
def test_model_keras_loads_in_a_fresh_process_after_importing_the_package_only(tiny_run):
    """model.keras names the package's optimizer (inception_keras>AdamW): `import inception_keras` must register it."""
    script = ("import sys, keras, inception_keras; "
              "model = keras.models.load_model(sys.argv[1], safe_mode=True); "
              "print(type(model.optimizer).__name__, model.output_names)")
    result = subprocess.run([sys.executable, "-c", script, str(tiny_run / "model.keras")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "AdamW ['main', 'aux1', 'aux2']"


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


def test_make_deterministic_sets_op_determinism_and_turns_the_arithmetic_optimiser_off():
    code = ("import tensorflow as tf; from tensorflow.python.framework import config; "
            "from inception_keras.train import make_deterministic; make_deterministic(); "
            "print(config.is_op_determinism_enabled(), "
            "tf.config.optimizer.get_experimental_options().get('arithmetic_optimization'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # process-wide settings
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False"]


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--variant", "v3"], "invalid choice"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in"),
    (["--lr", "inf"], "--lr must be positive and finite"),
    (["--warmup-epochs", "nan"], "--warmup-epochs must be >= 0 and finite, got nan"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be >= 0 and finite, got -1.0"),
    (["--weight-decay", "inf"], "--weight-decay must be >= 0 and finite"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
    (["--seed", str(2**32)], "--seed must be an integer from 0 to 4294967295"),
])
def test_bad_options_are_user_errors_and_write_nothing(argv, message, tmp_path):
    with pytest.raises(UserError, match=message):
        train_module.main(argv + ["--output-dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


# Keras' total-loss metrics (main + 0.3 aux1 + 0.3 aux2) differed in their last float32 bit between two
# processes running the same steps in 6 of 36 tiny runs (every per-head loss and metric, and every later epoch,
# identical) while Grappler's arithmetic optimiser was on; --deterministic now turns it off (0 of 20 differed,
# see train.make_deterministic). 20 runs do not prove it never happens, so the totals keep a float32 tolerance.
TOTAL_LOSSES = ("loss", "val_loss")


def assert_same_history(got: list[dict], expected: list[dict]) -> None:
    """Histories equal field by field: exactly, except the total losses, to float32 rounding."""
    without_totals = lambda rows: [{k: v for k, v in row.items() if k not in TOTAL_LOSSES} for row in rows]  # noqa: E731
    assert without_totals(got) == without_totals(expected)
    for row, reference in zip(got, expected, strict=True):
        for key in TOTAL_LOSSES:
            assert float(row[key]) == pytest.approx(float(reference[key]), rel=1e-6, abs=0), key


@pytest.mark.slow
def test_sigkill_during_epoch_two_then_rerun_equals_an_uninterrupted_run(tiny_run, tmp_path):
    """Also the same-seed test: epoch 1 of the killed process, a fresh one, must equal epoch 1 of ``tiny_run``."""
    argv = [sys.executable, "-m", "inception_keras.train", *TINY, "--output-dir", str(tmp_path), "--name", "killed"]
    run_dir = tmp_path / "killed"
    kill_after_epoch([subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)], run_dir,
                     settle=1.0)  # into epoch 2
    assert not (run_dir / "summary.json").exists()
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1]
    # no truncated file under a final name: every .keras file left behind loads
    for path in run_dir.rglob("*.keras"):
        if not path.name.startswith("."):
            keras.models.load_model(path)

    resumed = subprocess.run(argv, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming" in resumed.stdout
    assert_same_history(read_history(run_dir), read_history(tiny_run))  # each epoch once, same numbers
    splits = lambda d: json.loads((d / "summary.json").read_text())["splits"]  # noqa: E731
    assert splits(run_dir) == splits(tiny_run)


@pytest.mark.slow
def test_nan_after_the_last_update_of_an_epoch_is_not_committed_and_the_last_good_epoch_is_kept(tmp_path, capsys):
    from inception_keras.errors import run_cli

    # One step per epoch, warm-up over 2 steps from 0 to an absurd rate: epoch 1's step has rate 0 (the weights
    # stay finite), epoch 2's step 5e29 makes them NaN/inf after its loss was computed (finite): only the
    # validation loss and the weights show it.
    argv = ["--epochs", "3", "--max-train-batches", "1", "--max-val-batches", "1", "--batch-size", "16",
            "--image-size", "32", "--variant", "paper", "--optimizer", "sgd", "--lr", "1e30", "--schedule", "cosine",
            "--warmup-epochs", "2", "--weight-decay", "0", "--verbose", "none", "--output-dir", str(tmp_path),
            "--name", "diverged"]
    assert run_cli(train_module.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("the validation loss became NaN/inf by the end of epoch 2; the last good checkpoint "
                              "(epoch 1) is kept") in err[0], err
    run_dir = tmp_path / "diverged"
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == 1 and state["best_epoch"] == 1 and not (run_dir / "summary.json").exists()
    rows = read_history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1] and math.isfinite(float(rows[0]["val_loss"]))
    model = keras.models.load_model(run_dir / "checkpoint" / state["checkpoint"])  # complete and loadable
    assert model.optimizer.iterations.numpy() == 1  # epoch 1's step, nothing of epoch 2
    best = keras.models.load_model(run_dir / "model.keras")
    assert all(np.isfinite(w).all() for w in best.get_weights())


@pytest.mark.slow
def test_a_run_that_is_nan_after_its_first_epoch_saves_nothing_and_says_so(tmp_path, capsys):
    from inception_keras.errors import run_cli

    # The tester's case: training loss finite (computed before the update), validation loss NaN.
    argv = ["--epochs", "2", "--max-train-batches", "2", "--max-val-batches", "1", "--lr", "1e30",
            "--verbose", "none", "--output-dir", str(tmp_path), "--name", "diverged"]
    assert run_cli(train_module.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "by the end of epoch 1; no epoch ended with finite losses and weights" in err[0], err
    assert "lower --lr" in err[0]
    run_dir = tmp_path / "diverged"
    assert not (run_dir / "model.keras").exists() and not (run_dir / "checkpoint").exists()
    assert not (run_dir / "summary.json").exists()


def bad_input_cases(tmp_path):
    """(argv, expected message part) for every user error the train command must explain in one line."""
    empty = tmp_path / "empty"
    empty.mkdir()
    not_images = tmp_path / "not_images"
    for name in ("cats", "dogs"):
        (not_images / name).mkdir(parents=True)
        (not_images / name / "notes.txt").write_text("not an image")
    single = tmp_path / "single" / "cats"
    single.mkdir(parents=True)
    (single / "c.png").write_bytes(b"")
    corrupt = tmp_path / "corrupt"
    for name in ("a", "b"):
        (corrupt / name).mkdir(parents=True)
        (corrupt / name / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output directory should go")
    finished = tmp_path / "runs" / "sample_bn_32px"
    finished.mkdir(parents=True)
    (finished / "config.json").write_text("{}")
    (finished / "summary.json").write_text("{}")
    return [
        (["--dataset", str(tmp_path / "missing")], "does not exist"),
        (["--dataset", str(empty)], "empty"),
        (["--dataset", str(not_images)], "no images"),
        (["--dataset", str(single.parent)], "needs at least 2"),
        (["--dataset", str(corrupt)], "unreadable"),
        (["--dataset", "imagenet9000"], "unknown dataset"),
        (["--image-size", "16"], "at least 32"),
        (["--variant", "inception_v3"], "invalid choice"),
        (["--optimizer", "lamb"], "invalid choice"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--output-dir", str(blocker / "runs")], "not a writable directory"),
        ([], "finished run; pass --overwrite"),
    ]


def test_bad_inputs_exit_2_with_one_error_line_and_write_nothing(tmp_path, capsys):
    from inception_keras.errors import run_cli

    runs = tmp_path / "runs"
    for argv, message in bad_input_cases(tmp_path):
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        if "--output-dir" not in argv:
            argv = argv + ["--output-dir", str(runs)]
        status = run_cli(train_module.main, argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2, (argv, err)
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, argv


@pytest.mark.parametrize("variant", ["paper", "bn"])
def test_mixed_bfloat16_builds_trains_and_keeps_aux_heads_and_softmax_in_float32(variant):
    import tensorflow as tf

    with train_module.dtype_policy("mixed_bfloat16"):
        model = train_module.build_googlenet(7, input_shape=(32, 32, 3), variant=variant)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert model.get_layer("inception_3a_5x5").compute_dtype == "bfloat16"
    assert model.get_layer("classifier").compute_dtype == "bfloat16"
    aux_layers = [layer for layer in model.layers if layer.name.startswith(("aux1", "aux2"))]
    assert len(aux_layers) >= 14 and {layer.compute_dtype for layer in aux_layers} == {"float32"}
    train_module.compile_googlenet(model, "adam")
    x = tf.random.uniform((4, 32, 32, 3), -1, 1)
    y = np.array([0, 1, 2, 3])
    logs = model.train_on_batch(x, {"main": y, "aux1": y, "aux2": y}, return_dict=True)
    assert math.isfinite(logs["loss"])
    assert all(out.dtype == "float32" for out in model(x))


@pytest.mark.parametrize("name", ["..", ".", "", "../../escaped", "sub/run"])
def test_a_name_that_is_not_one_folder_is_refused_before_anything_is_touched(name, tmp_path, capsys):
    from inception_keras.errors import run_cli

    (tmp_path / "keep.txt").write_text("the user's file")
    other = tmp_path / "runs" / "other"
    other.mkdir(parents=True)
    (other / "summary.json").write_text("{}")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = ["--epochs", "1", "--max-train-batches", "1", "--max-val-batches", "1", "--verbose", "none",
            "--output-dir", str(tmp_path / "runs"), "--name", name, "--overwrite"]
    assert run_cli(train_module.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--name must be a single folder name" in err[0], err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def small_compiled_model():
    """A two-layer model with dropout, compiled, for checkpoint tests that need no GoogLeNet."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5, name="drop"), keras.layers.Dense(3)])
    model.compile("adam", "mse")
    return model


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_an_unreadable_checkpoint_is_one_user_error(damage, tmp_path):
    model = small_compiled_model()
    path = tmp_path / "epoch-0001.keras"
    model.save(path)
    states = {"drop": [1, 2]}
    train_module.load_checkpoint(small_compiled_model(), path, states)  # the intact file loads
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:
        path.unlink()
    with pytest.raises(UserError, match=r"checkpoint .*epoch-0001.keras is unreadable .*--overwrite"):
        train_module.load_checkpoint(small_compiled_model(), path, states)


@pytest.mark.slow
def test_resuming_from_a_corrupt_checkpoint_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    from inception_keras.errors import run_cli

    argv = ["--epochs", "1", "--max-train-batches", "1", "--max-val-batches", "1", "--batch-size", "16",
            "--verbose", "none", "--output-dir", str(tmp_path), "--name", "broken"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # interrupted after epoch 1 was committed, before the reports

    monkeypatch.setattr(train_module, "finish", killed)
    assert run_cli(train_module.main, argv) == 130
    monkeypatch.undo()
    checkpoint = tmp_path / "broken" / "checkpoint" / "epoch-0001.keras"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    capsys.readouterr()
    assert run_cli(train_module.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epoch-0001.keras is unreadable" in err[0] and "--overwrite" in err[0], err
    assert not (tmp_path / "broken" / "summary.json").exists()


def test_a_relative_folder_dataset_is_saved_as_an_absolute_path(tmp_path, monkeypatch):
    from inception_keras.errors import run_cli

    for c, name in enumerate(["dark", "light"]):
        for i in range(10):
            path = tmp_path / "qa" / "ds" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), 40 + 150 * c + i).save(path)
    monkeypatch.chdir(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # config.json is written before training: no need to train

    monkeypatch.setattr(train_module, "fit", interrupted)
    argv = ["--dataset", "qa/ds/", "--data-dir", "qa", "--epochs", "1", "--verbose", "none",
            "--output-dir", "runs"]
    assert run_cli(train_module.main, argv) == 130
    config = json.loads((tmp_path / "runs" / "ds_bn_32px" / "config.json").read_text())
    assert config["data"]["dataset"] == str(tmp_path / "qa" / "ds")
    assert config["data"]["data_dir"] == str(tmp_path / "qa")


def saved_run(folder, finished=False):
    """A run directory with a saved config.json (and summary.json when ``finished``), without training."""
    from dataclasses import asdict

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(asdict(train_module.TrainConfig())))
    if finished:
        (folder / "summary.json").write_text("{}")
    return folder


def test_resume_refuses_the_recipe_and_every_other_option_with_consistent_advice(tmp_path):
    run = saved_run(tmp_path / "runs" / "interrupted")
    with pytest.raises(UserError, match="--resume continues a run with its saved settings; drop --recipe$"):
        train_module.config_from_args(["--resume", str(run), "--recipe", "paper"])
    with pytest.raises(UserError, match="drop --overwrite; to start the run again instead, rerun the command "
                                        "that started it with --overwrite$"):
        train_module.config_from_args(["--resume", str(run), "--overwrite"])
    config = train_module.config_from_args(["--resume", str(run)])
    assert config.name == "interrupted" and config.output_dir == str(tmp_path / "runs")


def test_resume_of_a_finished_run_says_there_is_nothing_to_resume_and_not_to_add_overwrite(tmp_path):
    run = saved_run(tmp_path / "runs" / "done", finished=True)
    with pytest.raises(UserError) as error:
        train_module.config_from_args(["--resume", str(run)])
    message = str(error.value)
    assert "holds a finished run, there is nothing to resume" in message
    assert "rerun the command that started it" in message and "pass --overwrite" not in message


def test_resume_dot_names_the_run_folder_itself(tmp_path, monkeypatch):
    run = saved_run(tmp_path / "runs" / "interrupted")
    monkeypatch.chdir(run)
    config = train_module.config_from_args(["--resume", "."])
    assert config.name == "interrupted" and config.output_dir == str(tmp_path / "runs")
    train_module.validate(config)


FRESH_PREDICT = """
import sys
import keras, numpy as np
model = keras.models.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
assert "inception_keras" not in sys.modules
print(sorted({type(layer).__module__.split(".")[0] for layer in model.layers}))
"""


@pytest.mark.slow
def test_a_bn_runs_inference_model_loads_without_the_package(tiny_run, tmp_path):
    """Plain ``keras.models.load_model`` in a fresh process that never imports inception_keras."""
    images = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run([sys.executable, "-c", FRESH_PREDICT, str(tiny_run / "inference.keras"),
                           str(tmp_path / "images.npy"), str(tmp_path / "predicted.npy")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['keras']"
    expected = keras.models.load_model(tiny_run / "inference.keras").predict(images, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "predicted.npy"), expected, rtol=1e-5, atol=1e-6)
