"""Tests of inception_keras.augment through the training pipeline of the bundled sample: training
images are augmented, evaluation images and ``augment="none"`` are not."""

from __future__ import annotations

from collections import Counter

import numpy as np

from inception_keras.data import DataConfig, load_data

from helpers import batches


def image_keys(images: np.ndarray) -> Counter:
    """A multiset of images (exact float bytes), to compare datasets whose order differs."""
    return Counter(image.tobytes() for image in images)


def test_eval_is_deterministic_and_train_augments(sample):
    first, first_labels = batches(sample.eval_dataset("val"))
    second, second_labels = batches(sample.eval_dataset("val"))
    assert np.array_equal(first, second) and np.array_equal(first_labels, second_labels)
    plain = image_keys(batches(sample.eval_dataset("train"))[0])
    augmented = image_keys(batches(sample.train_dataset(heads=None))[0])
    assert sum(augmented.values()) == 4500
    assert sum((augmented & plain).values()) < 4500 * 0.2  # most are flipped or shifted


def test_augment_none_leaves_train_equal_to_eval():
    bundle = load_data(DataConfig(augment="none"))
    train_images, train_labels = batches(bundle.train_dataset(heads=None))
    eval_images, eval_labels = batches(bundle.eval_dataset("train"))
    assert image_keys(train_images) == image_keys(eval_images)
    assert Counter(train_labels.tolist()) == Counter(eval_labels.tolist())
    assert not np.array_equal(train_labels, eval_labels)  # shuffled
