"""Tests of inception_keras.data: the bundle's pipelines (shapes, heads, seeding, epochs), DataConfig,
and load_data's one-line errors that write nothing."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from inception_keras.data import DataConfig, UserError, load_data

from helpers import batches, listing, make_idx_dir, write_idx, write_image


# --------------------------------------------------------------------------- bundled sample


def test_sample_batches_shapes_dtypes_ranges(sample):
    images, labels = next(iter(sample.train_dataset()))
    assert images.shape == (64, 32, 32, 1) and images.dtype == tf.float32
    assert set(labels) == {"main", "aux1", "aux2"}
    assert all(labels[h].dtype == tf.int32 and labels[h].shape == (64,) for h in labels)
    assert np.array_equal(labels["main"], labels["aux1"]) and np.array_equal(labels["main"], labels["aux2"])
    test_images, test_labels = batches(sample.eval_dataset("test"))
    assert test_images.shape == (1000, 32, 32, 1) and test_images.dtype == np.float32
    assert test_images.min() == -1.0 and 0.9 < test_images.max() <= 1.0
    assert np.array_equal(test_labels, sample.labels("test"))


# --------------------------------------------------------------------------- configuration


def test_with_absolute_paths_makes_folders_and_data_dir_absolute_and_keeps_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qa" / "ds" / "rgba").mkdir(parents=True)
    (tmp_path / "mnist").mkdir()  # a folder named like a TFDS dataset: load_data reads the folder
    (tmp_path / "sample").mkdir()  # "sample" always means the bundled sample
    config = DataConfig(dataset="qa/ds/rgba/", data_dir="qa").with_absolute_paths()
    assert config.dataset == str(tmp_path / "qa" / "ds" / "rgba") and config.data_dir == str(tmp_path / "qa")
    assert DataConfig(dataset="mnist").with_absolute_paths().dataset == str(tmp_path / "mnist")
    for name in ("sample", "fashion_mnist", "cifar10", "missing/folder"):
        assert DataConfig(dataset=name).with_absolute_paths() == DataConfig(dataset=name)


# --------------------------------------------------------------------------- determinism


def test_training_is_seeded_and_reshuffled_each_epoch():
    def first_batch(ds):
        images, labels = next(iter(ds))
        return images.numpy(), labels.numpy()

    a = load_data(DataConfig(augment="inception", seed=3)).train_dataset(heads=None)
    b = load_data(DataConfig(augment="inception", seed=3)).train_dataset(heads=None)
    c = load_data(DataConfig(augment="inception", seed=4)).train_dataset(heads=None)
    epoch1, again = first_batch(a), first_batch(b)
    assert np.array_equal(epoch1[0], again[0]) and np.array_equal(epoch1[1], again[1])
    assert not np.array_equal(epoch1[1], first_batch(c)[1])
    assert not np.array_equal(epoch1[1], first_batch(a)[1])  # second iteration of `a` = next epoch


def test_eval_image_size_override_and_heads(sample):
    images, labels = next(iter(sample.eval_dataset("test", heads=("main",), image_size=64)))
    assert images.shape == (64, 64, 64, 1) and set(labels) == {"main"}
    rgb = load_data(DataConfig(channels=3, image_size=48))
    images, labels = next(iter(rgb.train_dataset(heads=None)))
    assert images.shape == (64, 48, 48, 3) and labels.dtype == tf.int32
    assert np.array_equal(images[..., 0], images[..., 2])  # gray tiled to RGB


# --------------------------------------------------------------------------- bad input


def bad_folder(tmp_path: Path, kind: str) -> str:
    """Folders that cannot be datasets."""
    root = tmp_path / kind
    root.mkdir()
    if kind == "empty_class":
        write_image(root / "cat" / "a.png", "L", 1)
        (root / "dog").mkdir()
    elif kind == "one_class":
        write_image(root / "cat" / "a.png", "L", 1)
    elif kind == "unreadable_class":
        write_image(root / "cat" / "a.png", "L", 1)
        (root / "dog").mkdir()
        (root / "dog" / "a.png").write_bytes(b"\x89PNG broken")
    elif kind == "val_without_train":
        write_image(root / "val" / "cat" / "a.png", "L", 1)
    elif kind == "test_with_new_class":
        for cls in ("cat", "dog"):
            write_image(root / "train" / cls / "a.png", "L", 1)
        write_image(root / "test" / "cow" / "a.png", "L", 1)
    elif kind == "idx_out_of_range":
        make_idx_dir(root, [0, 1, 2, 5] * 3, names=["a", "b", "c"])
    elif kind == "idx_incomplete":
        write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    elif kind == "too_few_to_carve":
        for cls in ("cat", "dog"):
            write_image(root / cls / "a.png", "L", 1)
    return str(root)


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "no_such_dataset_xyz"}, "unknown dataset 'no_such_dataset_xyz'.*known: sample, fashion_mnist"),
    ({"dataset": "/no/such/folder"}, "dataset folder /no/such/folder does not exist"),
    ({"dataset": "sample", "data_dir": "/no/such/dir"}, "data_dir /no/such/dir is not an existing folder"),
    ({"val_split": 0.0}, "val_split must be between 0 and 1"),
    ({"val_split": 1.0}, "val_split must be between 0 and 1"),
    ({"val_split": -0.2}, "val_split must be between 0 and 1"),
    ({"image_size": 31}, "image_size must be an integer of at least 32"),
    ({"image_size": 16}, "image_size must be an integer of at least 32"),
    ({"batch_size": 0}, "batch_size must be an integer of at least 1"),
    ({"channels": 2}, "channels must be 1, 3 or unset"),
    ({"seed": -1}, "seed must be an integer from 0 to 4294967295, got -1"),
    ({"seed": 2**32}, "seed must be an integer from 0 to 4294967295"),
    ({"augment": "mixup"}, "augment must be one of auto, none, flip_crop, inception"),
    ({"dataset": "tmp:empty"}, "has no class sub-folders"),
    ({"dataset": "tmp:empty_class"}, r"class folder .*dog has no images"),
    ({"dataset": "tmp:one_class"}, "has 1 class.*at least 2"),
    ({"dataset": "tmp:unreadable_class"}, "dog in .* have no readable training images"),
    ({"dataset": "tmp:val_without_train"}, "no train/ folder"),
    ({"dataset": "tmp:test_with_new_class"}, "class folder.*cow.*that train/ lacks"),
    ({"dataset": "tmp:idx_out_of_range"}, "label 5 outside the 3 classes"),
    ({"dataset": "tmp:idx_incomplete"}, "lacks train-labels-idx1-ubyte"),
    ({"dataset": "tmp:too_few_to_carve"}, "cannot carve a stratified test split"),
])
def test_bad_input_is_a_one_line_user_error(tmp_path, overrides, message):
    overrides = {"dataset": "sample", **overrides}
    if overrides["dataset"].startswith("tmp:"):
        overrides["dataset"] = bad_folder(tmp_path, overrides["dataset"][4:])
    before = listing(tmp_path)
    with pytest.warns(UserWarning, match="unreadable") if "unreadable" in overrides["dataset"] else nullcontext():
        with pytest.raises(UserError, match=message) as error:
            load_data(DataConfig(**overrides))
    assert "\n" not in str(error.value)
    assert listing(tmp_path) == before


def test_unknown_split_and_heads(sample):
    with pytest.raises(UserError, match="unknown split 'validation'"):
        sample.eval_dataset("validation")
    with pytest.raises(UserError, match="heads must be distinct"):
        sample.train_dataset(heads=("main", "main"))
    with pytest.raises(UserError, match="at least 32"):
        sample.eval_dataset("test", image_size=8)


def test_a_file_is_not_a_dataset(tmp_path):
    path = tmp_path / "images.zip"
    path.write_bytes(b"PK")
    with pytest.raises(UserError, match="is a file"):
        load_data(DataConfig(dataset=str(path)))


# --------------------------------------------------------------------------- full Fashion-MNIST and epochs


@pytest.mark.slow
def test_full_fashion_mnist_training_batches_at_96_px(fashion_mnist_dir):
    """The benchmark's real pipeline (96 px, 3 channels, flip + pad-and-crop) on the full files: shapes, range,
    labels. Its speed against in-memory batches is measured by ``python -m inception_keras.benchmark``."""
    bundle = load_data(DataConfig(dataset="fashion_mnist", data_dir=str(fashion_mnist_dir), image_size=96,
                                  channels=3, augment="flip_crop"))
    assert bundle.counts == {"train": 54000, "val": 6000, "test": 10000}
    batches = list(bundle.train_dataset().take(3))
    for images, labels in batches:
        assert images.shape == (bundle.config.batch_size, 96, 96, 3) and images.dtype == tf.float32
        assert -1.0 <= float(tf.reduce_min(images)) < float(tf.reduce_max(images)) <= 1.0
        assert set(labels["main"].numpy()) <= set(range(10)) and len(set(labels["main"].numpy())) > 5
        np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grayscale repeated to 3 channels
    assert not np.array_equal(batches[0][0], batches[1][0])


def test_epochs_are_a_pure_function_of_seed_and_epoch(sample):
    """A run resumed at epoch 2 gets exactly the batches an uninterrupted run got in its epoch 2."""
    def images(ds):
        return [b[0].numpy() for b in ds]

    full = images(sample.train_dataset(heads=None, epochs=range(0, 3), max_batches=2))
    resumed = images(sample.train_dataset(heads=None, epochs=range(2, 3), max_batches=2))
    assert len(full) == 6 and len(resumed) == 2
    np.testing.assert_array_equal(full[4], resumed[0])
    np.testing.assert_array_equal(full[5], resumed[1])
    assert not np.array_equal(full[0], full[2])  # epochs differ from each other
    assert sample.train_dataset(epochs=range(3), max_batches=2).cardinality() == 6
