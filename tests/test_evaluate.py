"""evaluate: reports equal scikit-learn's, heads and 10-crop are right, the CLI reproduces a saved run."""

import csv
import json
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import (accuracy_score, classification_report, log_loss, precision_recall_fscore_support,
                             top_k_accuracy_score)

from inception_keras import build_googlenet, compile_googlenet, evaluate, inference_model
from inception_keras.errors import UserError, run_cli

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt"]
SIZE = 32


class ArrayBundle:
    """Just enough of ``data.DataBundle`` for evaluation: in-memory images in [-1, 1] per split.

    ``eval_dataset`` resizes the 28 px source images to the requested size, as the
    real pipeline resizes from the source for ``image_size`` (10-crop uses it).
    """

    def __init__(self, images, labels, class_names=CLASS_NAMES, batch_size=8, channels=1):
        self.images, self._labels = images, labels
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.channels = channels
        self.counts = {split: len(values) for split, values in labels.items()}
        self.config = SimpleNamespace(dataset="arrays", batch_size=batch_size, image_size=SIZE)

    def labels(self, split):
        return self._labels[split]

    def eval_dataset(self, split, heads=None, image_size=None):
        size = image_size or self.config.image_size
        dataset = tf.data.Dataset.from_tensor_slices((self.images[split], self._labels[split]))
        return dataset.batch(self.config.batch_size).map(lambda x, y: (tf.image.resize(x, (size, size)), y))


def make_bundle(per_split=12, class_names=CLASS_NAMES, seed=0):
    """Random 28 px grayscale images with a bright square whose position depends on the class (learnable)."""
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for split in ("train", "val", "test"):
        y = np.arange(per_split) % len(class_names)
        x = rng.uniform(-1, -0.5, (per_split, 28, 28, 1)).astype("float32")
        for image, label in zip(x, y):
            image[2 + 3 * label: 6 + 3 * label, 4:24] = 1.0
        images[split], labels[split] = x, y.astype("int64")
    return ArrayBundle(images, labels, class_names)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_googlenet(len(CLASS_NAMES), input_shape=(SIZE, SIZE, 1), variant="bn")


@pytest.fixture(scope="module")
def bundle():
    return make_bundle()


# --- reports on fixed predictions ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def fixed():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(CLASS_NAMES) - 1, 80)  # the last class never occurs
    probabilities = {head: rng.dirichlet(np.ones(len(CLASS_NAMES)), 80).astype("float32")
                     for head in ("main", "aux1", "aux2")}
    probabilities["average"] = np.mean(list(probabilities.values()), axis=0)
    return labels, probabilities


def test_per_class_report_equals_sklearn(fixed):
    labels, probabilities = fixed
    report = evaluate.split_report("test", labels, probabilities, CLASS_NAMES)
    predicted = probabilities["main"].argmax(-1)
    classes = np.arange(len(CLASS_NAMES))
    assert report.classes == classification_report(labels, predicted, labels=classes, target_names=CLASS_NAMES,
                                                   output_dict=True, zero_division=0)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes,
                                                                     zero_division=0)
    np.testing.assert_allclose(report.per_class("precision"), precision)
    np.testing.assert_allclose(report.per_class("recall"), recall)
    np.testing.assert_allclose(report.per_class("f1-score"), f1)
    assert report.per_class("support") == support.tolist()


@pytest.mark.parametrize("head", ["main", "aux1", "aux2", "average"])
def test_head_metrics_equal_sklearn(fixed, head):
    labels, probabilities = fixed
    metrics = evaluate.split_report("test", labels, probabilities, CLASS_NAMES).heads[head]
    probs = probabilities[head]
    predicted, classes = probs.argmax(-1), np.arange(len(CLASS_NAMES))
    assert metrics["accuracy"] == accuracy_score(labels, predicted)
    assert metrics["top5_accuracy"] == top_k_accuracy_score(labels, probs, k=5, labels=classes)
    assert metrics["loss"] == pytest.approx(log_loss(labels, probs, labels=classes), rel=1e-5)
    for average in ("macro", "weighted"):
        expected = precision_recall_fscore_support(labels, predicted, labels=classes, average=average,
                                                   zero_division=0)
        assert [metrics[f"{average}_{m}"] for m in ("precision", "recall", "f1")] == pytest.approx(expected[:3])
    assert metrics["images"] == len(labels)


def test_overall_is_the_main_head_and_top5_is_undefined_for_few_classes(fixed):
    labels, probabilities = fixed
    report = evaluate.split_report("test", labels, probabilities, CLASS_NAMES)
    assert report.overall is report.heads["main"]
    few = evaluate.split_report("test", labels % 3, {"main": probabilities["main"][:, :3]}, ["a", "b", "c"])
    assert few.overall["top5_accuracy"] is None and list(few.heads) == ["main"]


def test_macro_averages_count_a_class_absent_from_the_split_as_zero():
    labels = np.array([0, 0, 1, 1])  # no image of class "c"
    probabilities = np.eye(3, dtype="float32")[[0, 1, 1, 1]]  # one class-0 image taken for class 1
    report = evaluate.split_report("test", labels, {"main": probabilities}, ["a", "b", "c"])
    assert report.classes["c"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
    assert report.classes["macro avg"]["recall"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # not (0.5 + 1) / 2
    assert report.overall["macro_recall"] == pytest.approx(0.5)
    assert report.overall["macro_precision"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert report.overall["weighted_recall"] == pytest.approx(0.75)  # support-weighted: "c" weighs 0


def test_written_reports(fixed, tmp_path):
    labels, probabilities = fixed
    reports = {split: evaluate.split_report(split, labels, probabilities, CLASS_NAMES)
               for split in ("train", "val", "test")}
    paths = evaluate.write_reports(reports, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv", "report.json", "report.md",
                                                           "report_heads.csv"]
    markdown = paths["markdown"].read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| class"))
    assert [c.strip() for c in header.strip("|").split("|")][:5] == [
        "class", "train precision", "train recall", "train F1", "train n"]
    assert "| T-shirt/top " in markdown and "| weighted avg " in markdown and "| average " in markdown
    f1 = reports["test"].classes["Trouser"]["f1-score"]
    assert f"{f1:.4f}" in next(line for line in markdown.splitlines() if line.startswith("| Trouser"))

    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 3 * (len(CLASS_NAMES) + 2)
    assert float(rows[1]["f1"]) == reports["train"].classes["Trouser"]["f1-score"]
    heads = list(csv.DictReader(paths["heads_csv"].open()))
    assert [(r["split"], r["head"]) for r in heads[:4]] == [("train", h) for h in ("main", "aux1", "aux2", "average")]
    document = json.loads(paths["json"].read_text())
    assert document["test"]["overall"] == reports["test"].overall
    assert document["val"]["classes"]["Shirt"]["support"] == 0


# --- predictions: heads and 10-crop --------------------------------------------------------------------

def test_main_head_is_the_inference_model_and_average_the_mean(model, bundle):
    dataset = bundle.eval_dataset("test")
    probabilities = evaluate.predict_heads(model, dataset)
    assert list(probabilities) == ["main", "aux1", "aux2", "average"]
    single = evaluate.predict_heads(inference_model(model), dataset)
    assert list(single) == ["main"]
    np.testing.assert_allclose(probabilities["main"], single["main"], atol=1e-6)
    mean = (probabilities["main"] + probabilities["aux1"] + probabilities["aux2"]) / 3
    np.testing.assert_allclose(probabilities["average"], mean, atol=1e-6)


def test_a_diverged_model_is_a_one_line_error_not_sklearns_nan_traceback(bundle):
    """Runs saved before NaN epochs were refused can hold NaN weights; their reports must not crash."""
    diverged = build_googlenet(len(CLASS_NAMES), input_shape=(SIZE, SIZE, 1), variant="bn", aux_heads=False)
    layer = diverged.get_layer("classifier")
    layer.set_weights([np.full_like(w, np.nan) for w in layer.get_weights()])
    with pytest.raises(UserError, match="outputs are NaN or infinite.*lower --lr"):
        evaluate.predict_heads(diverged, bundle.eval_dataset("test"))


def test_ten_crops_are_corners_centre_and_mirrors():
    image = np.arange(37 * 37, dtype="float32").reshape(1, 37, 37, 1)
    crops = evaluate.ten_crops(tf.constant(np.concatenate([image, -image])), 32).numpy()
    assert crops.shape == (20, 32, 32, 1)
    expected = [image[0, :32, :32], image[0, :32, 5:], image[0, 5:, :32], image[0, 5:, 5:], image[0, 2:34, 2:34]]
    expected += [crop[:, ::-1] for crop in expected]
    np.testing.assert_array_equal(crops[:10], np.stack(expected))
    np.testing.assert_array_equal(crops[10:], -np.stack(expected))  # image by image


def test_ten_crop_size_follows_the_paper():
    assert (evaluate.ten_crop_size(224), evaluate.ten_crop_size(32), evaluate.ten_crop_size(64)) == (256, 37, 73)


def test_ten_crop_averages_the_crops(model, bundle):
    larger = bundle.eval_dataset("test", image_size=37)
    probabilities = evaluate.predict_heads(model, evaluate.ten_crop_dataset(larger, SIZE, 16, count=12), crops=10)
    assert probabilities["main"].shape == (12, len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities["main"].sum(-1), 1.0, atol=1e-5)
    first = next(iter(larger.unbatch().batch(1)))[0]
    by_hand = model.predict(evaluate.ten_crops(first, SIZE), verbose=0)[0].mean(axis=0)
    np.testing.assert_allclose(probabilities["main"][0], by_hand, atol=1e-5)


def test_ten_crop_of_a_constant_image_equals_single_crop(model):
    constant = tf.data.Dataset.from_tensors(np.full((3, 37, 37, 1), 0.3, "float32"))
    ten = evaluate.predict_heads(model, evaluate.ten_crop_dataset(constant, SIZE, 8, count=3), crops=10)
    single = evaluate.predict_heads(model, tf.data.Dataset.from_tensors(np.full((3, SIZE, SIZE, 1), 0.3, "float32")))
    for head in ten:
        np.testing.assert_allclose(ten[head], single[head], atol=1e-5)


def test_ten_crop_report_compares_with_single_crop(model, bundle):
    reports = evaluate.evaluate_run_splits(model, bundle, splits=("val", "test"), crops=10)
    report = reports["test"]
    assert report.crops == 10 and report.single_crop["images"] == 12
    single = evaluate.evaluate_run_splits(model, bundle, splits=("test",))["test"]
    assert report.single_crop == single.overall
    markdown = evaluate.format_markdown(reports)
    assert "## 10 crops vs 1 crop" in markdown and "| accuracy, 1 crop | 10 crops " in markdown


# --- errors --------------------------------------------------------------------------------------------

def test_mismatched_classes_or_channels_or_splits_are_user_errors(model, bundle):
    with pytest.raises(UserError, match="the model has 7 classes but dataset 'arrays' has 10"):
        evaluate.evaluate_run_splits(model, make_bundle(class_names=[str(i) for i in range(10)]))
    rgb = make_bundle()
    rgb.channels = 3
    with pytest.raises(UserError, match="1-channel"):
        evaluate.evaluate_run_splits(model, rgb)
    empty = make_bundle()
    empty.counts["val"] = 0
    with pytest.raises(UserError, match="split 'val' .* has no images"):
        evaluate.evaluate_run_splits(model, empty)
    with pytest.raises(UserError, match="crops must be 1 or 10"):
        evaluate.evaluate_run_splits(model, bundle, crops=5)
    with pytest.raises(UserError, match="not a GoogLeNet"):
        evaluate.evaluate_run_splits(keras.Sequential([keras.Input((4,)), keras.layers.Dense(7)]), bundle)


# --- a saved run from the command line -----------------------------------------------------------------

HEADS = ("main", "aux1", "aux2")


def write_run(directory, model, bundle):
    """A run directory as inception_keras.train leaves it: model.keras, config.json, summary.json.

    summary.json records Keras' own evaluation of the test split, independent of evaluate.py.
    """
    compile_googlenet(model, "adam")
    model.save(directory / "model.keras")
    # One batch: Keras averages per-head losses over batches unweighted, which a partial last batch skews.
    images, labels = next(iter(bundle.eval_dataset("test").unbatch().batch(bundle.counts["test"])))
    logs = model.evaluate(images, {h: labels for h in HEADS}, batch_size=len(labels), return_dict=True, verbose=0)
    config = {"data": {"dataset": "arrays", "image_size": SIZE, "batch_size": 8},
              "model": {"variant": "bn", "image_size": SIZE, "num_classes": len(CLASS_NAMES)},
              "class_names": CLASS_NAMES}
    (directory / "config.json").write_text(json.dumps(config))
    summary = {"splits": {"test": {"accuracy": logs["main_accuracy"], "loss": logs["main_loss"]}}}
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model, bundle):
    """A run of the untrained 32 px model (cheap: no training step to trace)."""
    return write_run(tmp_path_factory.mktemp("run"), model, bundle)


@pytest.fixture
def arrays_data(monkeypatch, bundle):
    """Serve the in-memory bundle to the CLI instead of inception_keras.data."""
    def load_bundle(run_config, model, dataset=None, data_dir=None, batch_size=None):
        return bundle

    monkeypatch.setattr(evaluate, "load_bundle", load_bundle)


def check_cli_reproduces_summary(run, out, capsys):
    assert run_cli(evaluate.main, [str(run), "--splits", "val,test", "--out", str(out)]) == 0
    summary = json.loads((run / "summary.json").read_text())["splits"]["test"]
    report = json.loads((out / "report.json").read_text())
    assert report["test"]["overall"]["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-6)
    assert report["test"]["overall"]["loss"] == pytest.approx(summary["loss"], rel=1e-5)
    printed = capsys.readouterr().out
    assert printed.startswith("# Evaluation report") and f"{summary['accuracy']:.4f}" in printed
    return sorted(p.name for p in out.iterdir())


REPORT_FILES = ["confusion_matrix.png", "misclassified.png", "per_class_f1.png", "report.csv", "report.json",
                "report.md", "report_heads.csv"]


def test_cli_reproduces_the_test_accuracy_of_summary_json(run_dir, arrays_data, tmp_path, capsys):
    assert check_cli_reproduces_summary(run_dir, tmp_path / "eval", capsys) == REPORT_FILES


@pytest.mark.slow
def test_cli_reproduces_a_trained_run_on_the_sample_and_plots_its_curves(tiny_run, tmp_path, capsys):
    """The training command's run (tests/conftest.py): its data and history read back from the run directory."""
    files = check_cli_reproduces_summary(tiny_run, tmp_path / "eval", capsys)
    assert files == sorted(REPORT_FILES + ["curves.png"])
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert list(report) == ["val", "test"] and report["test"]["overall"]["images"] == 1000  # the sample's test split


def test_cli_with_a_model_file_and_defaults(run_dir, arrays_data, capsys):
    assert run_cli(evaluate.main, [str(run_dir / "model.keras"), "--splits", "test", "--batch-size", "5"]) == 0
    assert (run_dir / "evaluation" / "report.md").is_file()  # default --out: RUN_DIR/evaluation
    assert "| test  | main" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "does-not-exist does not exist: pass a run directory"),
    (["{run}", "--splits", "test,dev"], "'test,dev' is not a comma-separated list"),
    (["{run}", "--crops", "5"], "argument --crops: invalid choice"),
    (["{run}", "--batch-size", "0"], "'0' is not a positive integer"),
])
def test_cli_user_errors_are_one_line_and_write_nothing(run_dir, arrays_data, tmp_path, capsys, args, message):
    out = tmp_path / "eval"
    argv = [a.format(missing=tmp_path / "does-not-exist", run=run_dir) for a in args] + ["--out", str(out)]
    assert run_cli(evaluate.main, argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert not out.exists()


def test_cli_checks_out_before_evaluating(run_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli(evaluate.main, [str(run_dir), "--out", str(blocker / "eval")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (f"error: cannot write to {blocker / 'eval'}: {blocker} is not a "
                                                   "writable directory; choose another --out\n")


def test_cli_rejects_a_dataset_with_other_classes(run_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_cli(evaluate.main, [str(run_dir), "--dataset", "sample", "--out", str(out)]) == 2  # real data
    assert capsys.readouterr().err == ("error: the model has 7 classes but dataset 'sample' has 10: pass the "
                                       "dataset the model was trained on (--dataset, --data-dir)\n")
    assert not out.exists()


def test_cli_rejects_a_broken_model_and_a_bare_model_without_dataset(run_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((run_dir / "config.json").read_text())
    (broken / "model.keras").write_bytes(b"not a zip file")
    assert run_cli(evaluate.main, [str(broken)]) == 2
    assert capsys.readouterr().err == (f"error: cannot load the model {broken / 'model.keras'}: it is not a .keras "
                                       "archive (truncated or another format); pass a model saved by inception_keras\n")
    with zipfile.ZipFile(broken / "model.keras", "w") as archive:  # a zip, but not a Keras model
        archive.writestr("notes.txt", "hello")
    assert run_cli(evaluate.main, [str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot load the model {broken / 'model.keras'} (")
    bare = tmp_path / "bare.keras"
    bare.write_bytes((run_dir / "model.keras").read_bytes())
    assert run_cli(evaluate.main, [str(bare)]) == 2
    assert "has no config.json next to it: pass --dataset" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.keras", "broken"]
    assert sorted(p.name for p in broken.iterdir()) == ["config.json", "model.keras"]


def flip_middle(source, target, count=4096, compression=None):
    """Copy the .keras file ``source`` to ``target`` with ``count`` bytes in its middle inverted.

    ``compression``: first rewrite the archive with this zip compression (Keras stores its members).
    The zip directory at the end stays intact, so the file still looks like a zip archive.
    """
    if compression is not None:
        with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", compression) as new:
            for name in old.namelist():
                new.writestr(name, old.read(name))
        source = target
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    target.write_bytes(bytes(data))
    assert zipfile.is_zipfile(target)
    return target


@pytest.mark.parametrize("compression", [None, zipfile.ZIP_DEFLATED])
def test_cli_rejects_a_corrupt_model_in_one_line(run_dir, tmp_path, capsys, compression):
    corrupt = flip_middle(run_dir / "model.keras", tmp_path / "corrupt.keras", compression=compression)
    out = tmp_path / "eval"
    assert run_cli(evaluate.main, [str(corrupt), "--dataset", "sample", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: the model {corrupt} is corrupt (")
    assert captured.err.endswith("): re-save or re-train it\n")
    if compression is None:
        assert "model.weights.h5 fails its CRC-32 check" in captured.err
    assert not out.exists()


def test_cli_rejects_a_run_without_a_model(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert run_cli(evaluate.main, [str(tmp_path)]) == 2
    assert "has no model.keras or inference.keras" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.slow  # starts a Python with TensorFlow
def test_python_dash_m_prints_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "inception_keras.evaluate", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'nope'} does not exist: pass a run directory of inception_keras.train "
                      "or a .keras model file"]
