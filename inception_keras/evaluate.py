"""Evaluation of a trained GoogLeNet: per-class precision / recall / F1, per-head metrics, 10-crop.

What is measured, per split:

* The main head, i.e. the inference model with the aux heads dropped as in the
  paper, gives the per-class table (precision, recall, F1, support, macro and
  weighted averages: scikit-learn's ``classification_report``) and the overall
  metrics: top-1 / top-5 accuracy and macro / weighted scores (scikit-learn) and
  the cross-entropy loss (Keras, the loss the model trained with).
  Every class of the dataset is scored in every split (``labels=`` all
  classes): a class with no image in a split is listed with support 0 and
  precision / recall / F1 0 (``zero_division=0``), and counts in the macro
  averages, which are means over all classes; the weighted averages weight by
  support, so it has no effect on them.
* A model with aux heads also gets the same overall metrics for ``aux1``,
  ``aux2`` and ``average``, the mean of the three softmax outputs (the paper
  averaged over classifiers).  One forward pass of the full model gives every
  head; its ``main`` output is the inference model's output, as both share the
  same layers.
* Test-time augmentation, the paper's 10-crop evaluation: for a model input of
  S px the images are resized to ``round(S * 256 / 224)`` px (256 for 224, as
  in the paper; 37 for 32), cut into the four corner and the centre S x S crops
  and their horizontal mirrors, and the ten softmax outputs are averaged.  The
  single-crop result (the image resized straight to S) is computed as well and
  the difference reported.

Files written by :func:`write_reports` (each atomically, so a crash never leaves
half a file): ``report.md`` (the tables, also printed by the CLI),
``report.csv`` (per class, one row per split and class), ``report_heads.csv``
(overall metrics per split and head) and ``report.json`` (everything).
:func:`write_evaluation` adds the figures of :mod:`inception_keras.plots`.

Command line::

    python -m inception_keras.evaluate RUN_DIR_OR_MODEL [--dataset NAME] [--data-dir DIR]
        [--splits train,val,test] [--crops 1|10] [--out DIR] [--batch-size N]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, classification_report, precision_recall_fscore_support, top_k_accuracy_score

from . import plots
from .data import DataBundle, DataConfig, load_data
from .errors import ArgumentParser, UserError, run_cli
from .heads import head_names
from .runs import check_writable, write_json, write_text

SPLITS = ("train", "val", "test")
CROPS = (1, 10)
TOP_K = 5
AVERAGE_HEAD = "average"
MODEL_FILES = ("model.keras", "inference.keras")  # in a run directory, by preference: full model first
MAX_MISCLASSIFIED = 25
PER_CLASS_METRICS = ("precision", "recall", "f1-score", "support")  # classification_report's keys


# --- 10-crop test-time augmentation -------------------------------------------------------------------

def ten_crop_size(image_size: int) -> int:
    """Side images are resized to before the ten crops: ``round(S * 256 / 224)`` (the paper: 256 for 224)."""
    return round(image_size * 256 / 224)


def ten_crops(images: tf.Tensor, size: int) -> tf.Tensor:
    """The paper's ten ``size`` x ``size`` crops of every image in a batch.

    ``images`` is ``(B, R, R, C)`` with ``R >= size``.  Returns ``(B * 10, size,
    size, C)`` image by image (the ten crops of image 0, then those of image 1
    ...), in the order top-left, top-right, bottom-left, bottom-right, centre,
    then the same five mirrored left-right.
    """
    bottom, right = tf.shape(images)[1] - size, tf.shape(images)[2] - size
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    crops = [tf.image.crop_to_bounding_box(images, top, left, size, size) for top, left in corners]
    crops += [tf.image.flip_left_right(crop) for crop in crops]
    return tf.reshape(tf.stack(crops, axis=1), [-1, size, size, images.shape[-1]])


def ten_crop_dataset(dataset: tf.data.Dataset, size: int, batch_size: int, count: int) -> tf.data.Dataset:
    """Batches of ``batch_size`` crops from batches of ``count`` larger images, ten consecutive crops per image.

    Re-batching by crops keeps memory as for single-crop evaluation instead of
    ten times more.  Re-batching loses the dataset's length, so it is restated
    from ``count`` (Keras warns about running out of data otherwise).
    """
    def crop(batch, *labels):
        return ten_crops(batch, size)

    crops = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE).unbatch().batch(batch_size)
    return crops.apply(tf.data.experimental.assert_cardinality(math.ceil(count * 10 / batch_size)))


# --- predictions ---------------------------------------------------------------------------------------

def predict_heads(model: keras.Model, dataset: tf.data.Dataset, crops: int = 1) -> dict[str, np.ndarray]:
    """Softmax outputs of every head of a GoogLeNet on ``dataset``, averaged over ``crops`` per image.

    ``dataset`` yields image batches (with or without labels) where each image
    comes as ``crops`` consecutive inputs (see :func:`ten_crop_dataset`).
    Returns ``{head: (N, classes)}`` for ``main`` and, when the model has aux
    heads, ``aux1``, ``aux2`` and ``average`` (the mean of the three).
    """
    heads = model_heads(model)
    outputs = model.predict(dataset, verbose=0)
    outputs = outputs if len(heads) > 1 else [outputs]
    probabilities = {}
    for head, output in zip(heads, outputs, strict=True):
        output = np.asarray(output, dtype="float32")
        if not np.all(np.isfinite(output)):
            raise UserError(f"the model's {head!r} outputs are NaN or infinite: its weights are not finite "
                            "(training diverged); retrain it with a lower --lr")
        probabilities[head] = output.reshape(-1, crops, output.shape[-1]).mean(axis=1)
    if len(heads) > 1:
        probabilities[AVERAGE_HEAD] = np.mean([probabilities[head] for head in heads], axis=0)
    return probabilities


def model_heads(model: keras.Model) -> tuple[str, ...]:
    """The model's GoogLeNet heads in output order, or a UserError for any other model."""
    try:
        return head_names(model)
    except (ValueError, AttributeError):  # AttributeError: a Sequential model has no output_names
        outputs = [tensor.name for tensor in model.outputs]
        raise UserError(f"model {model.name!r} has outputs {outputs}, not a GoogLeNet classifier with a 'main' "
                        "output: pass a model saved by inception_keras") from None


# --- metrics and the per-split report ------------------------------------------------------------------

def head_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Overall metrics of one head from its softmax outputs.

    ``loss`` is Keras' sparse categorical cross-entropy; accuracy, top-5 accuracy
    (None with 5 classes or fewer, where it is always 1) and the macro / weighted
    precision, recall and F1 come from scikit-learn with ``labels`` = every
    class of the model and ``zero_division=0``: a class never predicted has
    precision 0, a class absent from ``labels`` has recall (and F1) 0, and the
    macro averages are plain means over all classes, absent ones included (a
    split with 2 of 3 classes, both recalled perfectly, has macro recall 2/3).
    The weighted averages weight each class by its support.
    """
    classes = np.arange(probabilities.shape[-1])
    predicted = probabilities.argmax(axis=-1)
    macro = precision_recall_fscore_support(labels, predicted, labels=classes, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(labels, predicted, labels=classes, average="weighted",
                                               zero_division=0)
    top5 = top_k_accuracy_score(labels, probabilities, k=TOP_K, labels=classes) if len(classes) > TOP_K else None
    return {
        "images": int(len(labels)),
        "loss": float(keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "top5_accuracy": None if top5 is None else float(top5),
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "weighted_precision": float(weighted[0]),
        "weighted_recall": float(weighted[1]),
        "weighted_f1": float(weighted[2]),
    }


def per_class_report(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """scikit-learn's ``classification_report`` as a dict, keyed by class name (plus macro / weighted avg).

    Every class in ``class_names`` has a row, with support 0 and precision /
    recall / F1 0 when the split has none of its images (``zero_division=0``);
    ``macro avg`` is the mean over all those rows, as in :func:`head_metrics`.
    """
    report = classification_report(labels, probabilities.argmax(axis=-1), labels=np.arange(len(class_names)),
                                   target_names=list(class_names), output_dict=True, zero_division=0)
    for row in report.values():
        if isinstance(row, dict):
            row["support"] = int(row["support"])  # a count; scikit-learn gives it as a float
    return report


@dataclass(eq=False)
class SplitReport:
    """The evaluation of one split.

    ``classes`` is the main head's ``classification_report`` dict; ``heads`` maps
    each head (main, aux1, aux2, average) to :func:`head_metrics`;
    ``single_crop`` holds the main head's single-crop metrics when ``crops`` is
    10.  ``labels`` and ``probabilities`` (main head) are kept for the plots.
    """

    split: str
    class_names: list[str]
    crops: int
    image_size: int
    classes: dict[str, Any]
    heads: dict[str, dict[str, Any]]
    single_crop: dict[str, Any] | None = None
    labels: np.ndarray | None = field(default=None, repr=False)
    probabilities: np.ndarray | None = field(default=None, repr=False)

    @property
    def overall(self) -> dict[str, Any]:
        """The main head's overall metrics (what ``summary.json`` records)."""
        return self.heads["main"]

    def per_class(self, metric: str) -> list[float]:
        """One of precision / recall / f1-score / support for every class, in class order."""
        return [self.classes[name][metric] for name in self.class_names]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything but the raw predictions."""
        return {"split": self.split, "crops": self.crops, "image_size": self.image_size, "overall": self.overall,
                "heads": self.heads, "single_crop": self.single_crop, "classes": self.classes}


def split_report(split: str, labels: np.ndarray, probabilities: Mapping[str, np.ndarray],
                 class_names: Sequence[str], *, crops: int = 1, image_size: int = 0,
                 single_crop: dict[str, Any] | None = None) -> SplitReport:
    """Build a :class:`SplitReport` from true labels and each head's softmax outputs (see :func:`predict_heads`)."""
    labels = np.asarray(labels).astype("int64").reshape(-1)
    main = probabilities["main"]
    if len(labels) != len(main):
        raise ValueError(f"{len(labels)} labels but {len(main)} predictions for split {split!r}")
    return SplitReport(split=split, class_names=list(class_names), crops=crops, image_size=image_size,
                       classes=per_class_report(labels, main, class_names),
                       heads={head: head_metrics(labels, probs) for head, probs in probabilities.items()},
                       single_crop=single_crop, labels=labels, probabilities=main)


# --- evaluating a model on a dataset -------------------------------------------------------------------

def model_size(model: keras.Model, bundle: DataBundle) -> int:
    """Input side of the model, or the data's image size for a model built for any size."""
    return int(model.input.shape[1] or bundle.config.image_size)


def check_compatible(model: keras.Model, bundle: DataBundle) -> None:
    """Raise a UserError unless the model's classes and channels are those of the dataset.

    Shared by every command that runs a model on a dataset (evaluate, export's check), so the advice names
    the options, not the command.
    """
    model_heads(model)
    classes = int(model.get_layer("main").output.shape[-1])
    dataset = bundle.config.dataset
    if classes != bundle.num_classes:
        raise UserError(f"the model has {classes} classes but dataset {dataset!r} has {bundle.num_classes}: "
                        "pass the dataset the model was trained on (--dataset, --data-dir)")
    channels = int(model.input.shape[-1])
    if channels != bundle.channels:
        raise UserError(f"the model takes {channels}-channel images but dataset {dataset!r} gives "
                        f"{bundle.channels}: use the data settings the model was trained with")


def check_splits(splits: Sequence[str], bundle: DataBundle) -> None:
    """Raise a UserError for no splits, an unknown split or one without images."""
    if not splits:
        raise UserError(f"no split to evaluate: choose from {', '.join(SPLITS)}")
    for split in splits:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
        if not bundle.counts.get(split):
            raise UserError(f"split {split!r} of dataset {bundle.config.dataset!r} has no images: "
                            "leave it out of --splits")


def evaluate_split(model: keras.Model, bundle: DataBundle, split: str, crops: int = 1) -> SplitReport:
    """Evaluate ``model`` on one split of ``bundle`` with 1 or 10 crops per image."""
    size = model_size(model, bundle)
    labels = bundle.labels(split)
    single = predict_heads(model, bundle.eval_dataset(split, image_size=size))
    if crops == 1:
        return split_report(split, labels, single, bundle.class_names, image_size=size)
    larger = bundle.eval_dataset(split, image_size=ten_crop_size(size))
    ten = predict_heads(model, ten_crop_dataset(larger, size, bundle.config.batch_size, len(labels)), crops=10)
    return split_report(split, labels, ten, bundle.class_names, crops=10, image_size=size,
                        single_crop=head_metrics(np.asarray(labels).reshape(-1), single["main"]))


def evaluate_run_splits(model: keras.Model, bundle: DataBundle, splits: Sequence[str] = SPLITS,
                        crops: int = 1) -> dict[str, SplitReport]:
    """Evaluate ``model`` on each split (1 or 10 crops) and return ``{split: SplitReport}``.

    Checks everything first (classes, channels, splits, crops), so a mistake
    costs no prediction time.
    """
    if crops not in CROPS:
        raise UserError(f"crops must be 1 or 10, got {crops}")
    check_compatible(model, bundle)
    check_splits(splits, bundle)
    return {split: evaluate_split(model, bundle, split, crops) for split in splits}


# --- reports: Markdown, CSV, JSON ----------------------------------------------------------------------

def _cell(value: Any) -> str:
    """A metric as table text: 4 decimals, integers as they are, ``-`` when undefined."""
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.4f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table with padded columns, so it reads well printed as well as rendered."""
    text = [[str(h) for h in header]] + [[_cell(v) if not isinstance(v, str) else v.replace("|", "\\|")
                                          for v in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
             for row in text]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


# Overall metrics shown in the Markdown tables, with their column titles.
OVERALL_COLUMNS = {"images": "images", "loss": "loss", "accuracy": "accuracy", "top5_accuracy": "top-5 accuracy",
                   "macro_f1": "macro F1", "weighted_f1": "weighted F1"}


def format_markdown(reports: Mapping[str, SplitReport]) -> str:
    """The report as Markdown: overall metrics, the per-class table of all splits side by side,
    the per-head table and, with 10 crops, the single- vs 10-crop comparison."""
    first = next(iter(reports.values()))
    crops = "10 crops (4 corners + centre, mirrored; softmax averaged)" if first.crops == 10 else "1 crop"
    sections = [
        "# Evaluation report",
        f"Main head of the inference model (aux heads dropped), {first.image_size} px, {crops}.",
        "## Overall",
        markdown_table(["split", *OVERALL_COLUMNS.values()],
                       [(split, *(r.overall[c] for c in OVERALL_COLUMNS)) for split, r in reports.items()]),
        "## Per class",
        per_class_markdown(reports),
    ]
    if len(first.heads) > 1:
        head_columns = {key: title for key, title in OVERALL_COLUMNS.items() if key != "images"}
        sections += ["## Per head (average = mean of the main, aux1 and aux2 softmax outputs)",
                     markdown_table(["split", "head", *head_columns.values()],
                                    [(split, head, *(metrics[c] for c in head_columns))
                                     for split, r in reports.items() for head, metrics in r.heads.items()])]
    if first.single_crop is not None:
        sections += ["## 10 crops vs 1 crop (main head)", crop_comparison_markdown(reports)]
    return "\n\n".join(sections) + "\n"


def per_class_markdown(reports: Mapping[str, SplitReport]) -> str:
    """Precision, recall, F1 and support of every class, each split's columns side by side."""
    header = ["class"] + [f"{split} {name}" for split in reports for name in ("precision", "recall", "F1", "n")]
    first = next(iter(reports.values()))
    rows = [[name] + [r.classes[name][metric] for r in reports.values() for metric in PER_CLASS_METRICS]
            for name in first.class_names + ["macro avg", "weighted avg"]]
    return markdown_table(header, rows)


def crop_comparison_markdown(reports: Mapping[str, SplitReport]) -> str:
    """Accuracy, top-5 accuracy and loss at 1 and 10 crops, with the change."""
    header = ["split"]
    for metric in ("accuracy", "top5_accuracy", "loss"):
        header += [f"{OVERALL_COLUMNS[metric]}, 1 crop", "10 crops", "change"]
    rows = []
    for split, r in reports.items():
        row: list[Any] = [split]
        for metric in ("accuracy", "top5_accuracy", "loss"):
            one, ten = r.single_crop[metric], r.overall[metric]
            row += [one, ten, None if one is None else f"{ten - one:+.4f}"]
        rows.append(row)
    return markdown_table(header, rows)


def per_class_csv(reports: Mapping[str, SplitReport]) -> str:
    """One row per split and class (then macro / weighted avg): split, class, precision, recall, f1, support."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "class", "precision", "recall", "f1", "support"])
    for split, r in reports.items():
        for name in r.class_names + ["macro avg", "weighted avg"]:
            writer.writerow([split, name] + [r.classes[name][metric] for metric in PER_CLASS_METRICS])
    return buffer.getvalue()


def heads_csv(reports: Mapping[str, SplitReport]) -> str:
    """One row per split, head and crop count with the overall metrics."""
    columns = list(next(iter(reports.values())).overall)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "head", "crops"] + columns)
    for split, r in reports.items():
        rows = [(head, r.crops, metrics) for head, metrics in r.heads.items()]
        if r.single_crop is not None:
            rows.append(("main", 1, r.single_crop))
        for head, crops, metrics in rows:
            writer.writerow([split, head, crops] + ["" if metrics[c] is None else metrics[c] for c in columns])
    return buffer.getvalue()


def write_reports(reports: Mapping[str, SplitReport], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.md, report.csv, report_heads.csv and report.json into ``out_dir``; return their paths."""
    out = Path(out_dir)
    return {
        "markdown": write_text(out / "report.md", format_markdown(reports)),
        "csv": write_text(out / "report.csv", per_class_csv(reports)),
        "heads_csv": write_text(out / "report_heads.csv", heads_csv(reports)),
        "json": write_json(out / "report.json", {split: r.to_dict() for split, r in reports.items()}),
    }


# --- figures -------------------------------------------------------------------------------------------

def gather_images(dataset: tf.data.Dataset, indices: Sequence[int]) -> np.ndarray:
    """The images at ``indices`` (positions in the unbatched dataset), in the order of ``indices``."""
    if not len(indices):
        return np.zeros((0, 1, 1, 1), "float32")
    wanted = {int(index): order for order, index in enumerate(indices)}
    found: dict[int, np.ndarray] = {}
    for position, element in enumerate(dataset.unbatch().as_numpy_iterator()):
        if position in wanted:
            found[wanted[position]] = element[0] if isinstance(element, tuple) else element
            if len(found) == len(wanted):
                break
    return np.stack([found[order] for order in range(len(indices))])


def plot_reports(reports: Mapping[str, SplitReport], bundle: DataBundle, out_dir: str | os.PathLike | None = None,
                 history_csv: str | os.PathLike | None = None) -> dict[str, Figure]:
    """The evaluation figures, saved as PNGs in ``out_dir`` when given.

    ``confusion_matrix`` and ``misclassified`` (the most confident mistakes) show
    the test split, or the last split evaluated without one; ``per_class_f1``
    shows every split; ``curves`` is drawn when ``history_csv`` is given.
    """
    def path(name: str) -> Path | None:
        return None if out_dir is None else Path(out_dir) / f"{name}.png"

    split = "test" if "test" in reports else list(reports)[-1]
    report = reports[split]
    predicted = report.probabilities.argmax(axis=-1)
    names = report.class_names
    shown = f"{split}, {report.crops} crops" if report.crops > 1 else split
    figures = {}
    if history_csv is not None:
        figures["curves"] = plots.plot_history(history_csv, path("curves"))
    figures["confusion_matrix"] = plots.plot_confusion_matrix(
        report.labels, predicted, names, path("confusion_matrix"), title=f"Confusion matrix ({shown})")
    figures["per_class_f1"] = plots.plot_per_class_f1(
        {s: r.per_class("f1-score") for s, r in reports.items()}, names, path("per_class_f1"))
    wrong = np.flatnonzero(predicted != report.labels)
    worst = wrong[np.argsort(-report.probabilities[wrong].max(axis=-1), kind="stable")][:MAX_MISCLASSIFIED]
    images = gather_images(bundle.eval_dataset(split, image_size=report.image_size), worst)
    figures["misclassified"] = plots.plot_misclassified(
        images, report.labels[worst], report.probabilities[worst], names, path("misclassified"),
        title=f"Most confident mistakes ({shown}): {len(wrong)} of {len(predicted)} images misclassified")
    return figures


# --- a saved run or model ------------------------------------------------------------------------------

@dataclass(eq=False)
class Evaluation:
    """A saved model evaluated on some splits: the reports, and what produced them."""

    reports: dict[str, SplitReport]
    model: keras.Model = field(repr=False)
    bundle: DataBundle = field(repr=False)
    model_path: Path
    run_dir: Path | None

    @property
    def history_csv(self) -> Path | None:
        """The run's ``history.csv``, if there is one."""
        path = self.run_dir / "history.csv" if self.run_dir else None
        return path if path and path.is_file() else None


def locate_model(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(model file, run directory or None)`` for a run directory or a ``.keras`` file."""
    path = Path(path)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name, path
        raise UserError(f"{path} has no {' or '.join(MODEL_FILES)}: pass a finished run directory of "
                        "inception_keras.train or a .keras model file")
    if path.is_file():
        if path.suffix != ".keras":
            raise UserError(f"{path} is not a .keras file: pass a run directory or a model saved as .keras")
        return path, path.parent if (path.parent / "config.json").is_file() else None
    raise UserError(f"{path} does not exist: pass a run directory of inception_keras.train or a .keras model file")


def read_run_config(run_dir: Path | None) -> dict[str, Any]:
    """The run's ``config.json`` (written by inception_keras.train), or ``{}`` when there is none."""
    path = run_dir / "config.json" if run_dir else None
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): restore it or evaluate the .keras file with "
                        "--dataset") from None


def check_archive(path: Path) -> None:
    """Raise a UserError unless ``path`` is a zip archive whose every member reads back with its CRC-32.

    A ``.keras`` file is a zip; damage inside it (a bad disk, a partial copy
    over the middle) leaves the zip directory intact, and Keras would only
    fail halfway through loading with ``zipfile.BadZipFile``.  Reading every
    member once (what ``unzip -t`` does) costs a fraction of the load.
    """
    if not zipfile.is_zipfile(path):  # Keras would report a truncated or foreign file as "File not found"
        raise UserError(f"cannot load the model {path}: it is not a .keras archive (truncated or another format); "
                        "pass a model saved by inception_keras")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        reason = None if bad is None else f"{bad} fails its CRC-32 check"
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    if reason is not None:
        raise UserError(f"the model {path} is corrupt ({reason}): re-save or re-train it")


def load_model(path: Path) -> keras.Model:
    """Load a saved model without its optimizer, turning a broken or corrupt file into a UserError."""
    check_archive(path)
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot load the model {path} ({reason}): pass a model saved by inception_keras") from None


def data_config(run_config: Mapping[str, Any], model: keras.Model, dataset: str | None = None,
                data_dir: str | None = None, batch_size: int | None = None) -> DataConfig:
    """The data settings of the run, with ``dataset`` / ``data_dir`` / ``batch_size`` overridden when given,
    resized and converted to the model's input size and channels."""
    fields = dict(run_config.get("data") or {})
    if dataset is not None:
        fields.update(dataset=dataset, data_dir=data_dir)
    elif data_dir is not None:
        fields["data_dir"] = data_dir
    if batch_size is not None:
        fields["batch_size"] = batch_size
    if model.input.shape[1] is not None:
        fields["image_size"] = int(model.input.shape[1])
    fields["channels"] = int(model.input.shape[-1])
    try:
        return DataConfig(**fields)
    except TypeError as exc:
        raise UserError(f"the run's config.json has data settings this version does not know ({exc}): "
                        "use the version that trained it") from None


def load_bundle(run_config: Mapping[str, Any], model: keras.Model, dataset: str | None = None,
                data_dir: str | None = None, batch_size: int | None = None) -> DataBundle:
    """Load the dataset to evaluate on with the settings of :func:`data_config`."""
    return load_data(data_config(run_config, model, dataset, data_dir, batch_size))


def check_class_names(run_config: Mapping[str, Any], bundle: DataBundle) -> None:
    """Raise a UserError when the run recorded class names other than the dataset's (same count, other classes)."""
    trained = run_config.get("class_names")
    if trained is None:
        return
    for index, (ours, theirs) in enumerate(zip(trained, bundle.class_names)):
        if ours != theirs:
            raise UserError(f"class {index} of the model is {ours!r} but {theirs!r} in dataset "
                            f"{bundle.config.dataset!r}: pass the dataset it was trained on "
                            "(--dataset, --data-dir)")


def evaluate_saved(path: str | os.PathLike, *, dataset: str | None = None, data_dir: str | None = None,
                   splits: Sequence[str] = SPLITS, crops: int = 1, batch_size: int | None = None) -> Evaluation:
    """Evaluate a run directory (its best ``model.keras``) or a ``.keras`` file; writes nothing.

    The data settings come from the run's ``config.json`` (the same validation
    split and image size as in training); ``dataset``, ``data_dir`` and
    ``batch_size`` override them, and are needed for a model file outside a run.
    """
    model_path, run_dir = locate_model(path)
    run_config = read_run_config(run_dir)
    if not run_config and dataset is None:
        raise UserError(f"{path} has no config.json next to it: pass --dataset (and --data-dir) to evaluate on")
    model = load_model(model_path)
    model_heads(model)
    bundle = load_bundle(run_config, model, dataset, data_dir, batch_size)
    check_compatible(model, bundle)
    check_class_names(run_config, bundle)
    reports = evaluate_run_splits(model, bundle, splits, crops)
    return Evaluation(reports=reports, model=model, bundle=bundle, model_path=model_path, run_dir=run_dir)


def write_evaluation(evaluation: Evaluation, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the reports and figures of an :class:`Evaluation` into ``out_dir``; return ``{name: path}``."""
    paths = write_reports(evaluation.reports, out_dir)
    figures = plot_reports(evaluation.reports, evaluation.bundle, out_dir, evaluation.history_csv)
    return {**paths, **{name: Path(out_dir) / f"{name}.png" for name in figures}}


def default_out_dir(model_path: Path, run_dir: Path | None) -> Path:
    """``RUN_DIR/evaluation``, or ``<model stem>_evaluation`` beside a model file outside a run."""
    return run_dir / "evaluation" if run_dir else model_path.with_name(f"{model_path.stem}_evaluation")


# --- command line --------------------------------------------------------------------------------------

def split_list(text: str) -> list[str]:
    """Parse ``--splits`` (comma-separated, e.g. ``val,test``)."""
    splits = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if not splits or unknown or len(set(splits)) != len(splits):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of distinct splits "
                                         f"from {','.join(SPLITS)}")
    return splits


def positive_int(text: str) -> int:
    """Parse a positive integer option."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The evaluate command line."""
    parser = ArgumentParser(
        prog="python -m inception_keras.evaluate",
        description="Evaluate a trained GoogLeNet: per-class precision / recall / F1 per split, per-head "
                    "metrics, confusion matrix, curves and misclassified images; optionally 10-crop.")
    parser.add_argument("path", metavar="RUN_DIR_OR_MODEL",
                        help="a run directory of inception_keras.train (uses its model.keras) or a .keras file")
    parser.add_argument("--dataset", help="dataset to evaluate on (default: the run's)")
    parser.add_argument("--data-dir", help="where the dataset lives (default: the run's)")
    parser.add_argument("--splits", type=split_list, default=list(SPLITS),
                        help="comma-separated splits (default: train,val,test)")
    parser.add_argument("--crops", type=int, choices=CROPS, default=1,
                        help="1, or 10 for the paper's 4 corners + centre and mirrors (default: 1)")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/evaluation)")
    parser.add_argument("--batch-size", type=positive_int, help="evaluation batch size (default: the run's)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, print the Markdown report and write reports and figures; for tests and notebooks."""
    args = parse_args(argv)
    out = Path(args.out) if args.out else default_out_dir(*locate_model(args.path))
    check_writable(out, "--out")
    evaluation = evaluate_saved(args.path, dataset=args.dataset, data_dir=args.data_dir, splits=args.splits,
                                crops=args.crops, batch_size=args.batch_size)
    paths = write_evaluation(evaluation, out)
    print(format_markdown(evaluation.reports))
    print(f"Wrote {', '.join(path.name for path in paths.values())} to {out}")
    return 0


def cli() -> None:
    """Console entry point: user errors become one ``error:`` line and exit status 2."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
