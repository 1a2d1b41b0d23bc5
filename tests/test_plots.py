"""plots: every figure is a valid PNG of sensible size with the expected axes, titles and contents."""

import csv
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from inception_keras import plots
from inception_keras.errors import UserError

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt"]


def assert_png(path, min_side=300, max_side=4000):
    """A real PNG of sensible pixel size, and no temporary file left beside it."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert all(min_side <= side <= max_side for side in image.size), image.size
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # written atomically


def write_history(path, columns, epochs=3):
    """A history.csv as inception_keras.train writes it: epoch from 1, then the metrics in sorted order."""
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch"] + columns)
        for epoch in range(1, epochs + 1):
            writer.writerow([epoch] + [f"{value:.4f}" for value in rng.uniform(0.1, 1.0, len(columns))])
    return path


AUX_COLUMNS = ["aux1_accuracy", "aux1_loss", "aux2_accuracy", "aux2_loss", "learning_rate", "loss",
               "main_accuracy", "main_loss", "main_top5_accuracy", "val_aux1_accuracy", "val_aux1_loss",
               "val_aux2_accuracy", "val_aux2_loss", "val_loss", "val_main_accuracy", "val_main_loss",
               "val_main_top5_accuracy"]
PLAIN_COLUMNS = ["accuracy", "learning_rate", "loss", "top5_accuracy", "val_accuracy", "val_loss",
                 "val_top5_accuracy"]


def legend(ax):
    return sorted(text.get_text() for text in ax.get_legend().get_texts())


def test_history_with_aux_heads_plots_every_head(tmp_path):
    history = write_history(tmp_path / "history.csv", AUX_COLUMNS)
    figure = plots.plot_history(history, tmp_path / "curves.png")
    assert isinstance(figure, Figure)
    assert_png(tmp_path / "curves.png")
    loss, accuracy, top5, learning_rate = figure.axes
    assert [ax.get_title() for ax in figure.axes] == ["Loss", "Accuracy", "Top-5 accuracy", "Learning rate"]
    heads = ["aux1", "aux2", "main"]
    assert legend(loss) == sorted(heads + ["total"] + [f"val {h}" for h in heads + ["total"]])
    assert legend(accuracy) == sorted(heads + [f"val {h}" for h in heads])
    assert legend(top5) == ["main", "val main"]
    assert list(learning_rate.lines[0].get_xdata()) == [1, 2, 3]
    assert learning_rate.get_yscale() == "log"


def test_history_of_a_schedule_that_reaches_zero_plots_linearly(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("epoch,learning_rate,loss\n1,0.002,2.3\n2,0.0,2.1\n")  # cosine decay ends at 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = plots.plot_history(history)
    assert figure.axes[-1].get_yscale() == "linear"


def test_history_without_aux_heads(tmp_path):
    figure = plots.plot_history(write_history(tmp_path / "history.csv", PLAIN_COLUMNS))
    assert [ax.get_title() for ax in figure.axes] == ["Loss", "Accuracy", "Top-5 accuracy", "Learning rate"]
    assert legend(figure.axes[0]) == ["main", "val main"]  # a bare "loss" is the main loss here


@pytest.mark.parametrize("column, expected", [
    ("main_top5_accuracy", ("top5_accuracy", "main", False)), ("val_aux2_accuracy", ("accuracy", "aux2", True)),
    ("val_loss", ("loss", "total", True)), ("learning_rate", None), ("epoch", None)])
def test_history_columns_map_to_panels(column, expected):
    assert plots.curve_of(column, has_aux=True) == expected


def test_history_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        plots.plot_history(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("epoch,loss\n")
    with pytest.raises(UserError, match="no epochs"):
        plots.plot_history(tmp_path / "empty.csv", tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_confusion_matrix_is_normalised_with_class_names(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASS_NAMES), 200)
    predicted = np.where(rng.uniform(size=200) < 0.7, labels, rng.integers(0, len(CLASS_NAMES), 200))
    figure = plots.plot_confusion_matrix(labels, predicted, CLASS_NAMES, tmp_path / "cm.png", title="Test")
    assert_png(tmp_path / "cm.png")
    ax = figure.axes[0]
    assert ax.get_title() == "Test, normalised over true labels"
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASS_NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASS_NAMES
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted label", "True label")
    matrix = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
    assert len(figure.axes) == 2  # the matrix and its colour bar


def test_per_class_f1_bars(tmp_path):
    scores = {"train": np.linspace(0.3, 0.9, len(CLASS_NAMES)), "test": np.linspace(0.9, 0.3, len(CLASS_NAMES))}
    figure = plots.plot_per_class_f1(scores, CLASS_NAMES, tmp_path / "f1.png")
    assert_png(tmp_path / "f1.png")
    ax = figure.axes[0]
    assert (ax.get_title(), ax.get_ylabel()) == ("Per-class F1", "F1")
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASS_NAMES
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, np.concatenate([scores["train"], scores["test"]]))
    assert legend(ax) == ["test", "train"]


@pytest.mark.parametrize("channels", [1, 3])
def test_misclassified_grid_titles(tmp_path, channels):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (7, 32, 32, channels)).astype("float32")
    labels = np.arange(7) % len(CLASS_NAMES)
    probabilities = np.full((7, len(CLASS_NAMES)), 0.05)
    probabilities[np.arange(7), (labels + 1) % len(CLASS_NAMES)] = 0.7
    figure = plots.plot_misclassified(images, labels, probabilities, CLASS_NAMES, tmp_path / "wrong.png")
    assert_png(tmp_path / "wrong.png")
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 7 and len(figure.axes) == 10  # a 2 x 5 grid
    assert shown[0].get_title() == "true: T-shirt/top\npred: Trouser (70%)"
    assert shown[0].images[0].get_array().ndim == (2 if channels == 1 else 3)
    assert figure.get_suptitle() == "Misclassified images"


def test_misclassified_without_mistakes_says_so(tmp_path):
    figure = plots.plot_misclassified(np.zeros((0, 32, 32, 1)), np.zeros(0), np.zeros((0, 7)), CLASS_NAMES,
                                      tmp_path / "none.png")
    assert_png(tmp_path / "none.png", min_side=100)
    assert figure.axes[0].texts[0].get_text() == "no misclassified images"
