"""Figures of a training run and of its evaluation.

Every function draws on a ``matplotlib.figure.Figure`` created directly, not
through ``pyplot``: such a figure renders with Agg, never opens a window and
needs no display, and it is not kept alive by pyplot's figure registry.  It is
returned, so a notebook shows it, and saved as PNG when a path is given.

* :func:`plot_history`: training curves of every head from Keras' ``history.csv``.
* :func:`plot_confusion_matrix`: confusion matrix normalised over the true labels.
* :func:`plot_per_class_f1`: per-class F1 bars, one colour per split.
* :func:`plot_misclassified`: a grid of misclassified images with true / predicted
  label and the predicted class' probability.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from .errors import UserError
from .runs import atomic_path

# Panels of the training curves, in display order, keyed by the suffix of their history.csv columns.
CURVE_PANELS = {"loss": "Loss", "accuracy": "Accuracy", "top5_accuracy": "Top-5 accuracy"}
LEARNING_RATE_COLUMNS = ("learning_rate", "lr")
HEAD_COLOURS = {"total": "C3", "main": "C0", "aux1": "C1", "aux2": "C2"}
DPI = 100


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Save ``figure`` as a PNG at ``path`` atomically and return the path."""
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def _finish(figure: Figure, path: str | os.PathLike | None) -> Figure:
    """Save the figure when a path is given; return it either way."""
    if path is not None:
        save_figure(figure, path)
    return figure


def read_history(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of a Keras ``CSVLogger`` file as float arrays (cells that are not numbers become NaN)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: pass the history.csv of a training run")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise UserError(f"{path} has no epochs: train for at least one epoch first")
    return {column: np.array([_number(row[column]) for row in rows]) for column in rows[0]}


def _number(cell: str | None) -> float:
    """A CSV cell as a float, NaN when empty or not a number (Keras writes 'NA' for missing values)."""
    try:
        return float(cell)
    except (TypeError, ValueError):
        return math.nan


def curve_of(column: str, has_aux: bool) -> tuple[str, str, bool] | None:
    """``(panel, head, is_validation)`` of a history column, or None if it is not a plotted metric.

    ``main_accuracy`` -> ("accuracy", "main", False); ``val_aux1_loss`` -> ("loss", "aux1", True).
    A bare ``loss`` is the weighted total when the model has aux heads and the main loss otherwise.
    """
    is_validation = column.startswith("val_")
    name = column.removeprefix("val_")
    # Longest suffix first, so that "main_top5_accuracy" is not read as an accuracy column.
    for panel in sorted(CURVE_PANELS, key=len, reverse=True):
        if name == panel:
            return panel, "total" if panel == "loss" and has_aux else "main", is_validation
        if name.endswith(f"_{panel}"):
            return panel, name.removesuffix(f"_{panel}"), is_validation
    return None


def plot_history(history_csv: str | os.PathLike, path: str | os.PathLike | None = None) -> Figure:
    """Training curves from ``history.csv``: loss, accuracy, top-5 accuracy and learning rate panels.

    Every head gets its colour (main, aux1, aux2, total loss); training is solid,
    validation dashed.  Works for runs with and without aux heads.  The x axis is
    the file's ``epoch`` column as written (inception_keras.train counts from 1).
    """
    history = read_history(history_csv)
    epochs = history["epoch"] if "epoch" in history else np.arange(1, len(next(iter(history.values()))) + 1)
    has_aux = any(column.removeprefix("val_").startswith("aux") for column in history)
    curves: dict[str, list[tuple[str, bool, np.ndarray]]] = {panel: [] for panel in CURVE_PANELS}
    for column, values in history.items():
        found = curve_of(column, has_aux)
        if found:
            panel, head, is_validation = found
            curves[panel].append((head, is_validation, values))
    panels = [(CURVE_PANELS[key], lines) for key, lines in curves.items() if lines]
    if not panels:
        raise UserError(f"{history_csv} has no loss or accuracy columns: pass the history.csv of a training run")
    learning_rate = next((history[c] for c in LEARNING_RATE_COLUMNS if c in history), None)

    count = len(panels) + (learning_rate is not None)
    figure = Figure(figsize=(4.5 * count, 3.8), layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    for ax, (title, lines) in zip(axes, panels):
        for head, is_validation, values in sorted(lines, key=lambda line: (line[1], line[0])):
            ax.plot(epochs, values, linestyle="--" if is_validation else "-", marker=".",
                    color=HEAD_COLOURS.get(head), label=f"{'val ' if is_validation else ''}{head}")
        ax.set(title=title, xlabel="epoch")
        ax.legend(fontsize="small")
    if learning_rate is not None:
        axes[-1].plot(epochs, learning_rate, marker=".", color="k")
        positive = np.all(learning_rate[np.isfinite(learning_rate)] > 0)  # a schedule may decay to exactly 0
        axes[-1].set(title="Learning rate", xlabel="epoch", yscale="log" if positive else "linear")
    figure.suptitle(f"Training curves ({Path(history_csv).parent.name or 'run'})")
    return _finish(figure, path)


def plot_confusion_matrix(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str],
                          path: str | os.PathLike | None = None, title: str = "Confusion matrix") -> Figure:
    """Confusion matrix normalised over the true labels (rows sum to 1), with class names on both axes."""
    side = max(5.0, 0.55 * len(class_names) + 2.5)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = figure.subplots()
    ConfusionMatrixDisplay.from_predictions(
        labels, predicted, labels=np.arange(len(class_names)), display_labels=list(class_names),
        normalize="true", ax=ax, cmap="Blues", values_format=".2f", xticks_rotation=45,
        include_values=len(class_names) <= 20, colorbar=True)
    ax.set_title(f"{title}, normalised over true labels")
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _finish(figure, path)


def plot_per_class_f1(f1_by_split: Mapping[str, Sequence[float]], class_names: Sequence[str],
                      path: str | os.PathLike | None = None) -> Figure:
    """Bars of each class' F1 score, one bar per split side by side (``{"train": [f1, ...], ...}``)."""
    figure = Figure(figsize=(max(6.0, 0.5 * len(class_names) * max(1, len(f1_by_split)) + 2.0), 4.2),
                    layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(class_names))
    width = 0.8 / max(1, len(f1_by_split))
    for index, (split, scores) in enumerate(f1_by_split.items()):
        ax.bar(positions + (index - (len(f1_by_split) - 1) / 2) * width, scores, width, label=split)
    ax.set_xticks(positions, list(class_names), rotation=45, ha="right")
    ax.set(title="Per-class F1", ylabel="F1", ylim=(0.0, 1.05))
    ax.legend(fontsize="small")
    return _finish(figure, path)


def _displayable(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image in [-1, 1] (the data pipeline's range) as ``(pixels in [0, 1], colormap)`` for imshow."""
    pixels = np.clip((np.asarray(image, dtype="float32") + 1.0) / 2.0, 0.0, 1.0)
    if pixels.shape[-1] == 3:
        return pixels, None
    return pixels[..., 0], "gray"


def plot_misclassified(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                       class_names: Sequence[str], path: str | os.PathLike | None = None,
                       title: str = "Misclassified images", columns: int = 5) -> Figure:
    """A grid of images titled ``true: X / pred: Y (p%)``.

    ``images`` (N, H, W, C) in [-1, 1], their true ``labels`` (N,) and predicted
    ``probabilities`` (N, classes); the predicted class is the arg-max and ``p`` its
    probability.  With no images the figure says so.
    """
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(2.2 * columns + 0.4, 2.5 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    if count == 0:
        axes[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    for ax, image, label, probs in zip(axes, images, labels, probabilities):
        pixels, colormap = _displayable(image)
        predicted = int(np.argmax(probs))
        ax.imshow(pixels, cmap=colormap, vmin=0.0, vmax=1.0)
        ax.set_title(f"true: {class_names[int(label)]}\npred: {class_names[predicted]} ({probs[predicted]:.0%})",
                     fontsize=8)
    figure.suptitle(title)
    return _finish(figure, path)
