"""Datasets for GoogLeNet: a dataset spec in, tf.data pipelines for train / val / test out.

:func:`load_data` turns a :class:`DataConfig` into a :class:`DataBundle` holding the
class names, split sizes and channel facts the model needs, and builds the
pipelines on demand (:meth:`DataBundle.train_dataset`, :meth:`DataBundle.eval_dataset`).

Sources (``DataConfig.dataset``):

* ``"sample"`` (default): the bundled balanced Fashion-MNIST subset, 500 train and
  100 test images per class (``data/fashion_mnist_sample.npz``; works offline).
* ``"fashion_mnist"``: the full set from IDX files in ``data_dir``, else in
  ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``), else TFDS.
* a folder of IDX files (MNIST format, gzipped or not); class names come from an
  optional ``class_names.txt`` (one per line), else the label numbers.
* a folder of images, one sub-folder per class (jpg/png/bmp/gif, any depth), with
  optional ``train/``, ``val/`` (or ``validation/``) and ``test/`` sub-folders.
  Unreadable images are skipped with one warning naming them.
* any TensorFlow Datasets name (``mnist``, ``cifar10``, ``tf_flowers``, ``imagenet2012``
  after a manual download, ...); ``data_dir`` defaults to the checkout's ``data/``
  folder, or TFDS's own default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)
  when the package is installed.

Splits are deterministic.  A source's own validation/test split is used when it
has one; otherwise a stratified, seeded fraction is carved from train:
``test_split`` first (only when there is no test split), then ``val_split`` from
what is left, each at least one example per class (so a carved class needs at
least three images).  The test split never feeds training.  (``imagenet2012``'s TFDS
test split has no labels, so its ``validation`` split serves as test and val is
carved from train, as the paper reports on the ILSVRC validation set.)

Normalisation: images are delivered as float32 in [-1, 1], ``x / 127.5 - 1`` of
the 0..255 pixels (the Inception convention), shape
``(batch, image_size, image_size, channels)``; labels are int32.  Grayscale is
tiled to RGB when ``channels=3``, RGB turned to luma (0.299 R + 0.587 G + 0.114 B)
when ``channels=1``, and an alpha channel is dropped.

Augmentation, training split only (validation, test and ``eval_dataset("train")``
are never augmented and come in the same order on every pass):

* ``flip_crop``: horizontal flip and the CIFAR-style pad-and-random-crop (up to
  ``image_size // 8`` pixels of zero padding on each side);
* ``inception``: the paper's random-resized crop (8%..100% of the area, aspect
  ratio 3/4..4/3), horizontal flip, and TF-Slim's photometric distortions
  (brightness +-32/255, saturation and contrast x0.5..1.5, hue +-0.2, hue and
  saturation for RGB only); the paper's random interpolation methods are not
  reproduced (bilinear only);
* ``auto``: ``flip_crop`` when the source's images are at most 64 px, else ``inception``;
* ``none``: training images equal the evaluation images (only the order differs).

Crops, flips and resizing are one vectorised ``tf.image.crop_and_resize`` per
batch.  Shuffling and augmentation are stateless functions of ``(seed, epoch,
batch)``: a run is repeatable, each epoch sees a new shuffle and new
augmentations, and a resumed run sees exactly the epochs it missed
(``train_dataset(epochs=range(k, n))``).

Images whose sizes differ are resized (squashed, like Caffe's ImageNet LMDBs) to a
stored square of ``ceil(image_size * 8 / 7)`` px (256 for 224) when decoded; crops
then come from that square.  Sources of one fixed size up to that side (MNIST,
CIFAR) are kept at their own size.
Decoded, pre-augmentation images are cached in memory when they take at most a
quarter of the machine's RAM (``cache=True``); in-memory arrays (sample, IDX) are
shuffled completely, streamed sources (files, TFDS) in blocks of ``shuffle_buffer`` examples.

Throughput of the pipeline alone (no model), 2 CPU cores shared with other jobs
(load average about 5), batch 64: the full Fashion-MNIST training split (54,000
images) at 96 px, 3 channels, 8,600-14,600 images/s with ``flip_crop`` and
2,600-3,800 images/s with ``inception``; a folder of 400x300 JPEGs at 224 px with
``inception`` (batch 32), about 300 images/s on the first, decoding epoch and 600
once cached.  GoogLeNet itself trains at about 10 (224 px) to 100 (64 px) images/s
on such a CPU, so the input pipeline is never the bottleneck.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import functools
import gzip
import logging
import math
import os
import shutil
import site
import socket
import sys
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from .errors import UserError

log = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 32  # the model's smallest input side
SPLITS = ("train", "val", "test")
AUGMENTATIONS = ("auto", "none", "flip_crop", "inception")
DEFAULT_HEADS = ("main", "aux1", "aux2")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SMALL_IMAGE_MAX_SIDE = 64  # "auto" augmentation: flip_crop up to this side, inception above
STORE_SCALE = 8 / 7  # stored side of variable-size images relative to image_size (256 for 224)
CACHE_MEMORY_FRACTION = 0.25
SAMPLE_FILE = "fashion_mnist_sample.npz"
SHARE_DIR = ("share", "inception_keras")  # where data_files puts the sample in an installed package
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IDX_FILES = {  # key -> accepted file names (without an optional .gz)
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
TFDS_HOST = "storage.googleapis.com"  # where TFDS fetches most datasets; probed before a download
TFDS_UNLABELLED_TEST = ("imagenet2012",)  # TFDS datasets whose "test" split has no labels

KNOWN_DATASETS: dict[str, str] = {
    "sample": "bundled balanced Fashion-MNIST subset, 500 train + 100 test images per class, 28x28 gray (offline)",
    "fashion_mnist": "full Fashion-MNIST, 60,000 + 10,000 28x28 gray, from IDX files "
                     f"(--data-dir or {FASHION_MNIST_DIR}) or TFDS",
    "mnist": "TFDS handwritten digits, 60,000 + 10,000 28x28 gray",
    "cifar10": "TFDS, 50,000 + 10,000 32x32 RGB, 10 classes",
    "cifar100": "TFDS, 50,000 + 10,000 32x32 RGB, 100 classes",
    "tf_flowers": "TFDS, 3,670 RGB photos of 5 flower kinds (test carved from train)",
    "imagenette": "TFDS, 10-class ImageNet subset, RGB photos",
    "imagenet2012": "TFDS ILSVRC 2012, 1000 classes; put ILSVRC2012_img_train.tar and "
                    "ILSVRC2012_img_val.tar in DATA_DIR/downloads/manual first",
    "PATH": "a folder of images with one sub-folder per class (optional train/ val/ test/), "
            "or a folder of IDX files",
}


@dataclass
class DataConfig:
    """What to load and how to feed it; every field is JSON-friendly so runs can save it."""

    dataset: str = "sample"
    data_dir: str | None = None
    image_size: int = 32
    channels: int | None = None
    val_split: float = 0.1
    augment: str = "auto"
    batch_size: int = 64
    seed: int = 0
    cache: bool = True
    shuffle_buffer: int = 10_000
    test_split: float = 0.1  # carved from train only when the source has no test split

    def with_absolute_paths(self) -> DataConfig:
        """A copy whose folder dataset and ``data_dir`` are absolute, so a saved config works from any directory.

        Names (``sample``, ``fashion_mnist``, TFDS names) stay as they are; the
        dataset is a folder when :func:`load_data` would read it as one (an existing
        folder wins over a TFDS name).  A missing path is left for ``load_data`` to
        report.
        """
        dataset = self.dataset
        if dataset not in ("sample", "fashion_mnist") and Path(dataset).expanduser().is_dir():
            dataset = os.path.abspath(Path(dataset).expanduser())
        data_dir = os.path.abspath(Path(self.data_dir).expanduser()) if self.data_dir else self.data_dir
        return replace(self, dataset=dataset, data_dir=data_dir)

    def validate(self) -> None:
        """Raise :class:`UserError` on a value no source can honour, before anything is read."""
        checks = [
            (bool(str(self.dataset).strip()), "dataset is empty: give 'sample', a dataset name or a folder"),
            (0 < self.val_split < 1, f"val_split must be between 0 and 1 (exclusive), got {self.val_split}"),
            (0 < self.test_split < 1, f"test_split must be between 0 and 1 (exclusive), got {self.test_split}"),
            (self.val_split + self.test_split < 1,
             f"val_split + test_split must stay below 1, got {self.val_split} + {self.test_split}"),
            (isinstance(self.image_size, int) and self.image_size >= MIN_IMAGE_SIZE,
             f"image_size must be an integer of at least {MIN_IMAGE_SIZE} (the model's minimum input), "
             f"got {self.image_size}"),
            (self.channels in (None, 1, 3), f"channels must be 1, 3 or unset, got {self.channels}"),
            (self.augment in AUGMENTATIONS, f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch_size must be an integer of at least 1, got {self.batch_size}"),
            (isinstance(self.shuffle_buffer, int) and self.shuffle_buffer >= 1,
             f"shuffle_buffer must be an integer of at least 1, got {self.shuffle_buffer}"),
            (isinstance(self.seed, int) and 0 <= self.seed <= 2**32 - 1,
             f"seed must be an integer from 0 to {2**32 - 1}, got {self.seed!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


# --------------------------------------------------------------------------- split sources


@dataclass(frozen=True)
class _ArraySplit:
    """A split held in memory: uint8 images (N, H, W, C) and int32 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def count(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class _StreamSplit:
    """A split read from files or TFDS on every pass, in a fixed order.

    ``make`` returns an unbatched dataset of (uint8 image of ``shape``, int32 label);
    ``labels`` returns the labels in the same order (read once, then kept).
    """

    make: Callable[[], tf.data.Dataset]
    labels: Callable[[], np.ndarray]
    count: int
    shape: tuple[int, int, int]


_Split = _ArraySplit | _StreamSplit


@dataclass(frozen=True)
class _Source:
    """What a loader found: class names, the three splits and facts about the original images."""

    class_names: list[str]
    splits: dict[str, _Split]
    channels: int
    size: tuple[int, int] | None
    max_side: int | None  # largest original side, None when unknown (drives augment="auto")


# --------------------------------------------------------------------------- the bundle


@dataclass
class DataBundle:
    """The loaded dataset: facts for the model, and pipelines built on demand.

    ``augment`` is the resolved augmentation (never "auto").
    """

    config: DataConfig
    class_names: list[str]
    num_classes: int
    counts: dict[str, int]
    channels: int
    source_channels: int
    source_size: tuple[int, int] | None
    augment: str = "none"
    splits: dict[str, _Split] = field(default_factory=dict, repr=False)
    _streams: dict[str, tf.data.Dataset] = field(default_factory=dict, repr=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one delivered image: what the model's input must be."""
        return (self.config.image_size, self.config.image_size, self.channels)

    def train_dataset(self, heads: Sequence[str] | None = DEFAULT_HEADS, epochs: Sequence[int] | None = None,
                      max_batches: int | None = None) -> tf.data.Dataset:
        """Augmented, shuffled training batches.

        Labels are ``{head: label}`` (the same label for every output head) or plain
        int labels when ``heads`` is None.

        With ``epochs=None`` each iteration of the dataset is one epoch with a fresh
        shuffle and fresh augmentations (for ``model.fit(ds, epochs=n)``).  With
        ``epochs=range(k, n)`` the dataset is those epochs back to back, each a pure
        function of ``(seed, epoch)``: a run resumed at epoch ``k`` sees exactly the
        batches an uninterrupted run saw (use it with ``fit(steps_per_epoch=...)``).
        """
        heads = _check_heads(heads)
        if isinstance(self._split("train"), _StreamSplit):
            self._stream("train")  # build the cache outside flat_map's graph, where every epoch can share it
        if epochs is None:
            # one fresh random key per pass over the dataset
            keys = tf.data.Dataset.random(seed=self.config.seed, rerandomize_each_iteration=True).take(1)
        else:
            keys = tf.data.Dataset.from_tensor_slices(tf.constant(list(epochs), tf.int64))
        per_epoch = min(self.steps_per_epoch(), max_batches or self.steps_per_epoch())
        ds = keys.flat_map(functools.partial(self._train_epoch, batches=per_epoch))
        ds = ds.apply(tf.data.experimental.assert_cardinality(per_epoch * (1 if epochs is None else len(epochs))))
        return _finish(ds, heads)

    def steps_per_epoch(self) -> int:
        """Training batches in one epoch (the last one may be partial)."""
        return math.ceil(self.counts["train"] / self.config.batch_size)

    @tf.autograph.experimental.do_not_convert
    def _train_epoch(self, key: tf.Tensor, batches: int) -> tf.data.Dataset:
        """The first ``batches`` augmented training batches of the epoch determined by ``(config.seed, key)``."""
        seed = tf.stack([tf.constant(self.config.seed, tf.int64), key])
        size, channels, augment = self.config.image_size, self.channels, self.augment
        batch_seeds = tf.data.Dataset.range(self.steps_per_epoch()).map(
            lambda index: tf.stack([seed[0] * 1_000_003 + seed[1], index]))

        def prepare(batch: tuple[tf.Tensor, tf.Tensor], batch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            images, labels = batch
            return _augment(images, size, channels, augment, batch_seed), labels

        return tf.data.Dataset.zip(self._batches("train", shuffle_seed=seed), batch_seeds).take(batches).map(
            prepare, num_parallel_calls=tf.data.AUTOTUNE)

    def eval_dataset(self, split: str, heads: Sequence[str] | None = None,
                     image_size: int | None = None) -> tf.data.Dataset:
        """The ``split`` ("train", "val" or "test") unaugmented, unshuffled, same order every pass.

        ``image_size`` overrides the resize target (multi-crop evaluation resizes
        larger and crops itself).
        """
        heads = _check_heads(heads)
        size = self.config.image_size if image_size is None else image_size
        if not isinstance(size, int) or size < MIN_IMAGE_SIZE:
            raise UserError(f"image_size must be an integer of at least {MIN_IMAGE_SIZE}, got {size}")
        channels = self.channels
        ds = self._batches(split, shuffle_seed=None).map(
            lambda images, labels: (_to_model_input(images, size, channels), labels),
            num_parallel_calls=tf.data.AUTOTUNE)
        return _finish(ds, heads)

    def labels(self, split: str) -> np.ndarray:
        """Int32 labels of ``split`` in :meth:`eval_dataset` order."""
        source = self._split(split)
        return np.array(source.labels if isinstance(source, _ArraySplit) else source.labels(), dtype=np.int32)

    def _split(self, split: str) -> _Split:
        if split not in self.splits:
            raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return self.splits[split]

    def _batches(self, split: str, shuffle_seed: tf.Tensor | None) -> tf.data.Dataset:
        """Batches of (uint8 images at stored size, int32 labels); shuffled when a seed (shape [2]) is given."""
        source = self._split(split)
        batch_size = self.config.batch_size
        if isinstance(source, _ArraySplit):
            images, labels = tf.constant(source.images), tf.constant(source.labels)
            order = tf.range(source.count, dtype=tf.int64)
            if shuffle_seed is not None:
                order = tf.random.experimental.stateless_shuffle(order, seed=shuffle_seed)
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(
                lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=tf.data.AUTOTUNE)
        ds = self._stream(split)
        if shuffle_seed is not None:
            ds = _block_shuffle(ds, min(self.config.shuffle_buffer, source.count), shuffle_seed)
        return ds.batch(batch_size, num_parallel_calls=tf.data.AUTOTUNE)

    def _stream(self, split: str) -> tf.data.Dataset:
        """The decoded examples of a streamed split, cached in memory (once per bundle) when they fit."""
        if split not in self._streams:
            source = self._split(split)
            ds = source.make()
            if self.config.cache and _fits_in_memory(source.count * math.prod(source.shape)):
                ds = ds.cache()
            self._streams[split] = ds
        return self._streams[split]


def _block_shuffle(ds: tf.data.Dataset, block: int, seed: tf.Tensor) -> tf.data.Dataset:
    """Permute each run of ``block`` consecutive examples by stateless random keys of ``seed`` (shape [2]).

    A stateless stand-in for ``Dataset.shuffle`` (whose seed cannot be a tensor
    when the global seed is 0): the order is a pure function of the seed, so an
    epoch is reproducible on its own; examples never leave their block.
    """
    def permute(images: tf.Tensor, labels: tf.Tensor, keys: tf.Tensor):
        order = tf.argsort(keys)
        return tf.gather(images, order), tf.gather(labels, order)

    keys = tf.data.Dataset.range(2**62).map(
        lambda i: tf.random.stateless_uniform([], tf.stack([seed[0] * 1_000_003 + seed[1], i])))
    blocks = tf.data.Dataset.zip(ds, keys).map(lambda example, key: (*example, key)).batch(block)
    return blocks.map(permute).unbatch()


def _check_heads(heads: Sequence[str] | None) -> tuple[str, ...] | None:
    """Heads as a tuple of distinct names, or None for plain labels."""
    if heads is None:
        return None
    heads = tuple(heads)
    if not heads or len(set(heads)) != len(heads) or not all(isinstance(h, str) and h for h in heads):
        raise UserError(f"heads must be distinct non-empty output names or None, got {heads!r}")
    return heads


def _finish(ds: tf.data.Dataset, heads: tuple[str, ...] | None) -> tf.data.Dataset:
    """Give every head the same labels and prefetch."""
    if heads is not None:
        ds = ds.map(lambda images, labels: (images, {head: labels for head in heads}))
    return ds.prefetch(tf.data.AUTOTUNE)


def _fits_in_memory(nbytes: int) -> bool:
    """Whether a cache of ``nbytes`` stays within CACHE_MEMORY_FRACTION of physical RAM."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return nbytes <= CACHE_MEMORY_FRACTION * ram


# --------------------------------------------------------------------------- preprocessing


def _convert_channels(images: tf.Tensor, channels: int) -> tf.Tensor:
    """(B, H, W, 1 or 3) float images to ``channels`` (gray tiled to RGB, RGB to luma)."""
    have = images.shape[-1]
    if have == channels:
        return images
    if channels == 3:
        return tf.image.grayscale_to_rgb(images)
    return tf.image.rgb_to_grayscale(images)


def _scale(images: tf.Tensor) -> tf.Tensor:
    """0..255 floats to [-1, 1]."""
    return tf.clip_by_value(images, 0.0, 255.0) / 127.5 - 1.0


def _to_model_input(images: tf.Tensor, size: int, channels: int) -> tf.Tensor:
    """The deterministic path: uint8 batch -> resized, channel-converted float32 in [-1, 1]."""
    x = tf.cast(images, tf.float32)
    if channels < x.shape[-1]:
        x = _convert_channels(x, channels)
    if tuple(x.shape[1:3]) != (size, size):
        # Stored images are at most 8/7 of image_size, where antialiasing changes little and costs 2-3x.
        antialias = max(x.shape[1:3]) > 1.5 * size
        x = tf.image.resize(x, (size, size), method="bilinear", antialias=antialias)
    return _scale(_convert_channels(x, channels))


def _crop_boxes(top: tf.Tensor, left: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                image_hw: tuple[int, int], size: int, flip: tf.Tensor) -> tf.Tensor:
    """Normalised ``crop_and_resize`` boxes sampling regions the way ``tf.image.resize`` would.

    A region (top, left, height, width) in source pixels is sampled at half-pixel
    centres, so the whole image with no flip equals a plain bilinear resize.
    ``flip`` swaps x1 and x2, which crop_and_resize turns into a mirrored crop.
    """
    h, w = (float(max(d - 1, 1)) for d in image_hw)
    y1 = (top + 0.5 * height / size - 0.5) / h
    x1 = (left + 0.5 * width / size - 0.5) / w
    y2 = y1 + height * (size - 1) / (size * h)
    x2 = x1 + width * (size - 1) / (size * w)
    x1, x2 = tf.where(flip, x2, x1), tf.where(flip, x1, x2)
    return tf.stack([y1, x1, y2, x2], axis=1)


def _flip_crop_regions(batch: tf.Tensor, image_hw: tuple[int, int], size: int,
                       seeds: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Whole-image regions shifted by up to size // 8 output pixels (pad-and-crop with zeros)."""
    pad = max(1, size // 8)
    h, w = (float(d) for d in image_hw)
    dy = tf.random.stateless_uniform([batch], seeds[0], -pad, pad + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([batch], seeds[1], -pad, pad + 1, dtype=tf.int32)
    top = tf.cast(dy, tf.float32) * h / size
    left = tf.cast(dx, tf.float32) * w / size
    return top, left, tf.fill([batch], h), tf.fill([batch], w)


def _inception_regions(batch: tf.Tensor, image_hw: tuple[int, int],
                       seeds: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Random regions of 8%..100% of the area with aspect ratio 3/4..4/3 (clipped to the image)."""
    h, w = (float(d) for d in image_hw)
    area = tf.random.stateless_uniform([batch], seeds[0], 0.08, 1.0) * h * w
    ratio = tf.exp(tf.random.stateless_uniform([batch], seeds[1], math.log(3 / 4), math.log(4 / 3)))
    height = tf.minimum(tf.sqrt(area / ratio), h)
    width = tf.minimum(tf.sqrt(area * ratio), w)
    top = tf.random.stateless_uniform([batch], seeds[2]) * (h - height)
    left = tf.random.stateless_uniform([batch], seeds[3]) * (w - width)
    return top, left, height, width


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's weights


def _colour_matrices(batch: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    """Per-image 3x3 matrices: saturation x0.5..1.5 (mix with luma), then hue +-0.2 turn (I/Q rotation)."""
    saturation = tf.random.stateless_uniform([batch, 1, 1], seeds[0], 0.5, 1.5)
    to_gray = tf.constant(np.tile(_LUMA, (3, 1)))
    saturate = saturation * tf.eye(3) + (1 - saturation) * to_gray
    angle = tf.random.stateless_uniform([batch], seeds[1], -0.2, 0.2) * 2 * math.pi
    cos, sin, zero, one = tf.cos(angle), tf.sin(angle), tf.zeros_like(angle), tf.ones_like(angle)
    rotate = tf.stack([tf.stack([one, zero, zero], 1), tf.stack([zero, cos, -sin], 1),
                       tf.stack([zero, sin, cos], 1)], 1)
    to_yiq = tf.constant(_RGB_TO_YIQ)
    return tf.linalg.inv(to_yiq)[None] @ rotate @ to_yiq[None] @ saturate


def _photometric(images: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    """TF-Slim's colour distortions (brightness, saturation, hue, contrast), a new draw per image.

    On 0..255 floats (B, H, W, C); saturation and hue only for RGB.  The four steps
    are linear, so they are applied as one per-image affine map: with brightness
    b, colour matrix M and contrast c, ``c * M x + M (b + (1 - c) * mean(x))``.
    """
    batch, channels = tf.shape(images)[0], images.shape[-1]
    brightness = tf.random.stateless_uniform([batch, 1], seeds[0], -32.0, 32.0)
    contrast = tf.random.stateless_uniform([batch, 1, 1], seeds[1], 0.5, 1.5)
    if channels == 3:
        matrix = _colour_matrices(batch, seeds[2:])
    else:
        matrix = tf.ones([batch, 1, 1])
    mean = tf.reduce_mean(images, axis=(1, 2))
    shift = matrix @ (brightness + (1 - contrast[:, 0]) * mean)[..., None]  # (B, C, 1)
    flat = tf.reshape(images, [batch, -1, channels]) @ tf.transpose(contrast * matrix, [0, 2, 1])
    x = tf.reshape(flat + tf.transpose(shift, [0, 2, 1]), tf.shape(images))
    return tf.clip_by_value(x, 0.0, 255.0)


def _augment(images: tf.Tensor, size: int, channels: int, augment: str, seed: tf.Tensor) -> tf.Tensor:
    """The training path: uint8 batch -> augmented float32 in [-1, 1] (``augment`` != "auto")."""
    if augment == "none":
        return _to_model_input(images, size, channels)
    x = tf.cast(images, tf.float32)
    if channels < x.shape[-1]:
        x = _convert_channels(x, channels)
    batch = tf.shape(x)[0]
    image_hw = (int(x.shape[1]), int(x.shape[2]))
    seeds = tf.random.experimental.stateless_split(seed, 9)
    if augment == "flip_crop":
        regions = _flip_crop_regions(batch, image_hw, size, seeds)
    else:
        regions = _inception_regions(batch, image_hw, seeds)
    flip = tf.random.stateless_uniform([batch], seeds[4]) < 0.5
    boxes = _crop_boxes(*regions, image_hw=image_hw, size=size, flip=flip)
    x = tf.image.crop_and_resize(x, boxes, tf.range(batch), (size, size), extrapolation_value=0.0)
    x = _convert_channels(x, channels)
    if augment == "inception":
        x = _photometric(x, seeds[5:])
    return _scale(x)


def _fit_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 (H, W, 1..4) to (H, W, ``channels``): alpha dropped, gray tiled to RGB or RGB to luma."""

    def from_gray(img: tf.Tensor) -> tf.Tensor:
        return tf.tile(img[..., :1], [1, 1, channels])

    def from_color(img: tf.Tensor) -> tf.Tensor:
        if channels == 3:
            return img[..., :3]
        luma = tf.image.rgb_to_grayscale(tf.cast(img[..., :3], tf.float32))
        return tf.cast(tf.round(luma), tf.uint8)

    known = image.shape[-1]
    if known is not None:
        fitted = from_color(image) if known >= 3 else from_gray(image)
    else:
        fitted = tf.cond(tf.shape(image)[-1] >= 3, lambda: from_color(image), lambda: from_gray(image))
    return tf.ensure_shape(fitted, (None, None, channels))


def _fit_image(image: tf.Tensor, shape: tuple[int, int, int]) -> tf.Tensor:
    """One decoded uint8 image (H, W, 1..4 channels) to the stored ``shape``: channels fixed, resized if needed."""
    height, width, channels = shape
    image = _fit_channels(image, channels)

    def resize(antialias: bool) -> tf.Tensor:
        resized = tf.image.resize(image, (height, width), method="bilinear", antialias=antialias)
        return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)

    hw = tf.shape(image)[:2]
    shrink = tf.reduce_max(tf.cast(hw, tf.float32) / (height, width))
    # Antialiasing costs about 4x; below a 2x shrink plain bilinear aliases little.
    fitted = tf.case([(tf.reduce_all(hw == (height, width)), lambda: image),
                      (shrink > 2.0, lambda: resize(True))], default=lambda: resize(False))
    return tf.ensure_shape(fitted, shape)


def _stored_side(image_size: int) -> int:
    """Side of the square that variable-size images are decoded to."""
    return math.ceil(image_size * STORE_SCALE)


def _stored_shape(size: tuple[int, int] | None, channels: int, image_size: int) -> tuple[int, int, int]:
    """Keep fixed sizes up to the stored side; squash anything else to the stored square."""
    side = _stored_side(image_size)
    if size is not None and max(size) <= side:
        return (size[0], size[1], channels)
    return (side, side, channels)


# --------------------------------------------------------------------------- splits


def _carve(labels: np.ndarray, fraction: float, seed: int, what: str, hint: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of positions 0..N-1 into (kept, carved), each sorted.

    At least one example per class is carved, so tiny folders still get every class.
    """
    classes = len(np.unique(labels))
    n_carve = max(math.ceil(fraction * len(labels)), classes)
    positions = np.arange(len(labels))
    try:
        kept, carved = train_test_split(positions, test_size=n_carve, stratify=labels, random_state=seed)
    except ValueError as exc:
        raise UserError(f"cannot carve a stratified {what} split ({fraction:g}) from {len(labels)} training "
                        f"examples in {classes} classes ({exc}); {hint}") from None
    return np.sort(kept), np.sort(carved)


def _carve_missing(train_labels: np.ndarray, has_val: bool, has_test: bool,
                   config: DataConfig, hint: str) -> dict[str, np.ndarray]:
    """Positions into the train split for each split that must be carved from it (and what train keeps)."""
    positions = {"train": np.arange(len(train_labels))}
    if not has_test:
        kept, carved = _carve(train_labels, config.test_split, config.seed, "test", hint)
        positions = {"train": kept, "test": carved}
    if not has_val:
        kept, carved = _carve(train_labels[positions["train"]], config.val_split, config.seed, "validation", hint)
        positions["val"] = positions["train"][carved]
        positions["train"] = positions["train"][kept]
    return positions


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Labels as int32, or a UserError when one lies outside 0..num_classes-1."""
    labels = np.asarray(labels).astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise UserError(f"{where} has label {int(labels[bad][0])} outside the {num_classes} classes "
                        f"0..{num_classes - 1}: fix the labels or the class names list")
    return labels.astype(np.int32)


def _check_classes(class_names: Sequence[str], where: str) -> None:
    """A classifier needs at least two classes."""
    if len(class_names) < 2:
        raise UserError(f"{where} has {len(class_names)} class(es); a classifier needs at least 2: add classes")


def _array_source(class_names: list[str], train: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray], config: DataConfig, where: str) -> _Source:
    """In-memory train/test arrays (N, H, W[, C]) -> a source with a carved validation split."""
    _check_classes(class_names, where)
    (x_train, y_train), (x_test, y_test) = train, test
    y_train = _check_labels(y_train, len(class_names), where)
    y_test = _check_labels(y_test, len(class_names), where)
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    positions = _carve_missing(y_train, has_val=False, has_test=True, config=config,
                               hint="lower val_split or add examples")
    splits = {name: _ArraySplit(x_train[p], y_train[p]) for name, p in positions.items()}
    splits["test"] = _ArraySplit(x_test, y_test)
    height, width, channels = x_train.shape[1:]
    return _Source(list(class_names), splits, channels=min(channels, 3), size=(height, width),
                   max_side=max(height, width))


# --------------------------------------------------------------------------- bundled sample


def sample_search_path(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where the bundled sample is looked for, in order.

    1. ``data_dir`` (when given);  2. the checkout's ``data/`` folder (source tree or
    editable install);  3. ``<sys.prefix>/share/inception_keras`` (installed through
    setup.cfg ``data_files``);  4. ``<site.USER_BASE>/share/inception_keras`` (``pip --user``).
    """
    candidates = [Path(data_dir).expanduser()] if data_dir else []
    candidates += [Path(__file__).resolve().parent.parent / "data",
                   Path(sys.prefix).joinpath(*SHARE_DIR),
                   Path(site.getuserbase()).joinpath(*SHARE_DIR)]
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return [path / SAMPLE_FILE for path in unique]


def find_sample(data_dir: str | os.PathLike | None = None) -> Path:
    """The first existing bundled sample on :func:`sample_search_path`."""
    candidates = sample_search_path(data_dir)
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(f"bundled sample {SAMPLE_FILE} not found in {', '.join(str(p.parent) for p in candidates)}: "
                    "reinstall inception_keras or run data/make_fashion_mnist_sample.py")


def _load_sample(config: DataConfig) -> _Source:
    """The bundled Fashion-MNIST subset."""
    path = find_sample(config.data_dir)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            parts = {key: arrays[key] for key in ("x_train", "y_train", "x_test", "y_test", "class_names")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise UserError(f"bundled sample {path} is unreadable ({exc}): "
                        "regenerate it with data/make_fashion_mnist_sample.py") from None
    return _array_source([str(name) for name in parts["class_names"]], (parts["x_train"], parts["y_train"]),
                         (parts["x_test"], parts["y_test"]), config, str(path))


# --------------------------------------------------------------------------- IDX files


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST format, gzipped or not) into an array of its declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read IDX file {path} ({exc}): it is corrupt or truncated; "
                        "download it again") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 4:
        magic = raw[:4].hex() or "empty"
        raise UserError(f"{path} is not an IDX file of unsigned bytes (magic number 0x{magic}, expected "
                        "0x00000801 or 0x00000803): point to MNIST-format files")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)) if len(raw) >= header else ()
    expected = header + math.prod(shape) if shape else header
    if len(raw) != expected or not shape:
        raise UserError(f"IDX file {path} is truncated or corrupt ({len(raw)} bytes, its header says {expected}): "
                        "download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_files(directory: str | os.PathLike) -> dict[str, Path] | None:
    """The four MNIST-format files in ``directory`` (gzipped or not), or None if there are none.

    A directory with some but not all four raises :class:`UserError` naming what is missing.
    """
    directory = Path(directory)
    found: dict[str, Path] = {}
    for key, names in IDX_FILES.items():
        for name in names:
            for candidate in (directory / name, directory / f"{name}.gz"):
                if key not in found and candidate.is_file():
                    found[key] = candidate
    if not found:
        return None
    missing = [IDX_FILES[key][0] for key in IDX_FILES if key not in found]
    if missing:
        raise UserError(f"IDX folder {directory} lacks {', '.join(missing)} (.gz or not): "
                        "add the missing files")
    return found


def _load_idx(directory: Path, config: DataConfig, class_names: Sequence[str] | None = None) -> _Source:
    """An MNIST-format folder; class names from ``class_names``, ``class_names.txt`` or the label values."""
    files = find_idx_files(directory)
    if files is None:
        raise UserError(f"no IDX files in {directory}: expected train-images-idx3-ubyte(.gz) and friends")
    x_train, y_train = read_idx(files["train_images"]), read_idx(files["train_labels"])
    x_test, y_test = read_idx(files["test_images"]), read_idx(files["test_labels"])
    for images, labels, kind in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{kind} IDX files in {directory} disagree: images {images.shape}, labels "
                            f"{labels.shape}; expected (N, H, W) images and N labels")
    if class_names is None:
        names_file = directory / "class_names.txt"
        if names_file.is_file():
            class_names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        else:
            class_names = [str(i) for i in range(int(max(y_train.max(), y_test.max())) + 1)]
    return _array_source(list(class_names), (x_train, y_train), (x_test, y_test), config, str(directory))


def _load_fashion_mnist(config: DataConfig) -> _Source:
    """Full Fashion-MNIST: IDX files in data_dir, else the Debian package's, else TFDS."""
    directory = Path(config.data_dir).expanduser() if config.data_dir else FASHION_MNIST_DIR
    if directory.is_dir() and find_idx_files(directory) is not None:
        return _load_idx(directory, config, FASHION_MNIST_CLASSES)
    alternative = f" (or put its four IDX files, train-images-idx3-ubyte.gz and so on, in {directory})"
    return _load_tfds("fashion_mnist", config, alternative)


# --------------------------------------------------------------------------- image folders


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (any depth, sorted) for one folder of class sub-folders."""
    classes = sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {
        d.name: sorted(p for p in d.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        for d in classes
    }


def _scan_folder(root: Path) -> tuple[list[str], dict[str, tuple[list[Path], list[int]]]]:
    """Class names and (files, labels) of each split present on disk."""
    split_dirs = {"train": root / "train", "val": root / "val", "test": root / "test"}
    if not split_dirs["val"].is_dir() and (root / "validation").is_dir():
        split_dirs["val"] = root / "validation"
    present = {name: d for name, d in split_dirs.items() if d.is_dir()}
    if present and "train" not in present:
        raise UserError(f"{root} has {'/'.join(sorted(present))}/ but no train/ folder: add train/<class>/ images")
    if not present:
        present = {"train": root}
    layouts = {name: _class_folders(d) for name, d in present.items()}
    class_names = list(layouts["train"])
    if not class_names:
        raise UserError(f"{present['train']} has no class sub-folders: put images in "
                        f"{present['train']}/<class name>/ (jpg, png, bmp, gif)")
    _check_classes(class_names, str(present["train"]))
    for name, layout in layouts.items():
        unknown = sorted(set(layout) - set(class_names))
        if unknown:
            raise UserError(f"{present[name]} has class folder(s) {', '.join(unknown)} that train/ lacks: "
                            "add them to train/ or remove them")
        for class_name, files in layout.items():
            if not files and name == "train":
                raise UserError(f"class folder {present[name] / class_name} has no images (jpg, png, bmp, gif): "
                                "add images or remove the folder")
    index = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for name, layout in layouts.items():
        files = [f for class_name in layout for f in layout[class_name]]
        labels = [index[class_name] for class_name in layout for _ in layout[class_name]]
        if not files:
            raise UserError(f"{present[name]} has no images in its class folders: add images or remove it")
        splits[name] = (files, labels)
    return class_names, splits


def _decode(path: tf.Tensor) -> tf.Tensor:
    """Read and decode one image file to uint8 (H, W, 1..4), first frame of a GIF."""
    return tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)


def _probe_images(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Decode every file once, in parallel: (readable mask, shapes (N, 3) of the readable ones)."""
    paths = tf.constant([str(f) for f in files])
    ds = tf.data.Dataset.from_tensor_slices(paths).enumerate()
    ds = ds.map(lambda i, p: (i, tf.shape(_decode(p))), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ignore_errors().batch(4096)
    readable = np.zeros(len(files), bool)
    shapes = np.zeros((len(files), 3), np.int64)
    for positions, found in ds.as_numpy_iterator():
        readable[positions] = True
        shapes[positions] = found
    return readable, shapes[readable]


def _load_folder(root: Path, config: DataConfig) -> _Source:
    """A folder of class sub-folders, optionally under train/ val/ test/."""
    class_names, found = _scan_folder(root)
    everything = [f for files, _ in found.values() for f in files]
    log.info("checking %d images under %s", len(everything), root)
    readable, shapes = _probe_images(everything)
    if not readable.all():
        bad = [str(f) for f, ok in zip(everything, readable, strict=True) if not ok]
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        warnings.warn(f"skipping {len(bad)} unreadable image(s) (not decodable as jpg/png/bmp/gif): {shown}",
                      stacklevel=3)
    splits_files: dict[str, tuple[list[str], np.ndarray]] = {}
    start = 0
    for name, (files, labels) in found.items():
        ok = readable[start:start + len(files)]
        start += len(files)
        splits_files[name] = ([str(f) for f, good in zip(files, ok, strict=True) if good],
                              np.array(labels, np.int32)[ok])
    for name, (files, _) in splits_files.items():
        if not files:
            raise UserError(f"the {name} images in {root} are all unreadable: replace them")
    train_labels = splits_files["train"][1]
    emptied = [class_names[c] for c in range(len(class_names)) if not (train_labels == c).any()]
    if emptied:
        raise UserError(f"class(es) {', '.join(emptied)} in {root} have no readable training images: "
                        "add readable images or remove the folder(s)")
    channels = 3 if (shapes[:, 2] >= 3).any() else 1
    sizes = {(int(h), int(w)) for h, w, _ in shapes}
    size = sizes.pop() if len(sizes) == 1 else None
    shape = _stored_shape(size, channels, config.image_size)
    train_files, train_labels = splits_files.pop("train")
    positions = _carve_missing(train_labels, "val" in splits_files, "test" in splits_files, config,
                               hint=f"add images to the small classes or create val/ and test/ folders in {root}")
    for name, p in positions.items():
        splits_files[name] = ([train_files[i] for i in p], train_labels[p])
    splits = {name: _file_split(files, labels, shape) for name, (files, labels) in splits_files.items()}
    return _Source(class_names, splits, channels=channels, size=size, max_side=int(shapes[:, :2].max()))


def _file_split(files: list[str], labels: np.ndarray, shape: tuple[int, int, int]) -> _StreamSplit:
    """A split decoded from image files in parallel on every pass (or once, then cached)."""

    def make() -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(files, tf.string), tf.constant(labels, tf.int32)))
        return ds.map(lambda path, label: (_fit_image(_decode(path), shape), label),
                      num_parallel_calls=tf.data.AUTOTUNE)

    return _StreamSplit(make, lambda: labels, len(labels), shape)


# --------------------------------------------------------------------------- TFDS


def default_tfds_dir() -> Path | None:
    """The checkout's ``data/`` folder when running from a source tree, else None (TFDS's own default)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "setup.cfg").is_file() and (root / "data").is_dir():
        return root / "data"
    return None


def _network_available(host: str = TFDS_HOST, timeout: float = 5.0) -> bool:
    """Whether ``host`` answers on port 443 within ``timeout`` s (TFDS retries for minutes otherwise)."""

    def connect() -> None:
        with socket.create_connection((host, 443), timeout=timeout):
            pass

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(connect).result(timeout=timeout + 1)  # name lookup has no timeout of its own
        return True
    except (OSError, concurrent.futures.TimeoutError):
        return False
    finally:
        pool.shutdown(wait=False)


def _remove_new(paths: list[Path], existed: list[bool]) -> None:
    """Remove the paths a failed download created, so a user error leaves nothing behind."""
    for path, was_there in zip(paths, existed, strict=True):
        if not was_there and path.exists():
            shutil.rmtree(path, ignore_errors=True)


def _prepare_tfds(builder, name: str, alternative: str = "") -> None:
    """Download and prepare a TFDS dataset, or raise UserError saying where to put its files.

    Checks first what can be checked without writing (manual files present, network
    reachable); whatever a failed preparation still created is removed.
    """
    import tensorflow_datasets as tfds

    root = Path(builder.data_dir_root)
    manual_dir = root / "downloads" / "manual"
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        first_sentence = " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split()).split(". ")[0].rstrip(".")
        where = f"put its manually downloaded files in {manual_dir} ({first_sentence[:200]}) and rerun"
        if not manual_dir.is_dir() or not any(manual_dir.iterdir()):
            raise UserError(f"TFDS dataset {name!r} is not prepared in {root} and needs a manual download: {where}")
    else:
        where = (f"run `tfds build {name} --data_dir {root}` on a machine with internet and copy "
                 f"{root / name} here{alternative}, or pass --data-dir where it is prepared")
        if not _network_available():
            raise UserError(f"TFDS dataset {name!r} is not prepared in {root} and cannot be downloaded "
                            f"(no connection to {TFDS_HOST}): {where}")
    created = [root, root / "downloads", root / "downloads" / "extracted", root / "downloads" / name, root / name]
    existed = [path.exists() for path in created]
    log.info("preparing TFDS dataset %s in %s", name, root)
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    except Exception as exc:  # TFDS raises assorted network, assertion and IO errors
        _remove_new(created, existed)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot prepare TFDS dataset {name!r} in {root} ({reason[:200]}): {where}") from None


def _tfds_labels(builder, split: str, label_key: str, image_key: str, num_classes: int) -> np.ndarray:
    """All labels of a TFDS split in file order, reading no pixels."""
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()})
    ds = ds.map(lambda example: example[label_key], num_parallel_calls=tf.data.AUTOTUNE).batch(8192)
    labels = np.concatenate([np.zeros(0, np.int64), *ds.as_numpy_iterator()])
    return _check_labels(labels, num_classes, f"TFDS split {builder.name}/{split}")


def _tfds_split(builder, split: str, keys: tuple[str, str], shape: tuple[int, int, int],
                labels: Callable[[], np.ndarray], count: int, keep: np.ndarray | None = None) -> _StreamSplit:
    """A TFDS split, or the examples of it where ``keep`` is True, fitted to ``shape`` on every pass."""
    image_key, label_key = keys

    def make() -> tf.data.Dataset:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        if keep is not None:
            mask = tf.constant(keep)
            ds = ds.enumerate().filter(lambda i, _: tf.gather(mask, i)).map(lambda _, example: example)
        return ds.map(lambda ex: (_fit_image(ex[image_key], shape), tf.cast(ex[label_key], tf.int32)),
                      num_parallel_calls=tf.data.AUTOTUNE)

    return _StreamSplit(make, labels, count, shape)


def _refuse_missing_folder(name: str) -> None:
    """A dataset with a path separator that TFDS does not know either was meant as a folder: say it is missing."""
    if "/" in name or os.sep in name:
        raise UserError(f"dataset folder {name} does not exist ({Path(name).expanduser().absolute()} is not a "
                        f"folder) and {name!r} is not a TFDS dataset either: check the path or the name")


def _tfds_builder(name: str, data_dir: Path | None):
    """``tfds.builder`` with unknown names turned into a UserError listing what works."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    except tfds.core.registered.DatasetNotFoundError:
        _refuse_missing_folder(name)
        close = difflib.get_close_matches(name, sorted({*KNOWN_DATASETS, *tfds.list_builders()}), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown dataset {name!r}{hint}: not a known name, a TFDS dataset or an existing folder; "
                        f"known: {', '.join(KNOWN_DATASETS)}; any TFDS name works if its data is in --data-dir"
                        ) from None
    except Exception as exc:  # malformed "name/config:version" specs and the like
        _refuse_missing_folder(name)
        raise UserError(f"cannot open TFDS dataset {name!r} ({str(exc).splitlines()[0][:200]}): "
                        "check the name, config and version") from None


def _load_tfds(name: str, config: DataConfig, alternative: str = "") -> _Source:
    """A TFDS image classification dataset: its own validation/test splits, else carved from train.

    ``alternative`` is appended to the "where to put the files" advice of an impossible download.
    """
    import tensorflow_datasets as tfds

    data_dir = Path(config.data_dir).expanduser() if config.data_dir else default_tfds_dir()
    builder = _tfds_builder(name, data_dir)
    info = builder.info
    keys = info.supervised_keys
    features = info.features
    if (not isinstance(keys, tuple) or len(keys) != 2 or not all(isinstance(k, str) for k in keys)
            or not isinstance(features[keys[0]], tfds.features.Image)
            or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
        raise UserError(f"TFDS dataset {name!r} is not image classification (supervised keys {keys}): "
                        "pick a dataset with (image, label) pairs")
    if not builder.is_prepared():
        _prepare_tfds(builder, name, alternative)
    image_key, label_key = keys
    class_names = list(features[label_key].names)
    _check_classes(class_names, f"TFDS dataset {name!r}")
    height, width, channels = features[image_key].shape
    channels = 1 if channels == 1 else 3
    size = (height, width) if height and width else None
    shape = _stored_shape(size, channels, config.image_size)
    available = set(info.splits.keys())
    if "train" not in available:
        raise UserError(f"TFDS dataset {name!r} has no train split (splits: {', '.join(sorted(available))}): "
                        "pick another dataset")
    own = {"val": "validation" if "validation" in available else None,
           "test": "test" if "test" in available else None}
    if builder.name in TFDS_UNLABELLED_TEST:
        own = {"val": None, "test": own["val"]}
    def whole(split: str) -> _StreamSplit:
        labels = cache(lambda: _tfds_labels(builder, split, label_key, image_key, len(class_names)))
        return _tfds_split(builder, split, keys, shape, labels, info.splits[split].num_examples)

    splits = {ours: whole(theirs) for ours, theirs in own.items() if theirs is not None}
    if own["val"] and own["test"]:
        splits["train"] = whole("train")
    else:
        log.info("reading the labels of %s/train to carve stratified splits", name)
        train_labels = _tfds_labels(builder, "train", label_key, image_key, len(class_names))
        positions = _carve_missing(train_labels, own["val"] is not None, own["test"] is not None, config,
                                   hint="lower val_split / test_split")
        for ours, p in positions.items():
            keep = np.zeros(len(train_labels), bool)
            keep[p] = True
            splits[ours] = _tfds_split(builder, "train", keys, shape, (lambda p=p: train_labels[p]), len(p), keep)
    max_side = max(size) if size else None
    return _Source(class_names, splits, channels=channels, size=size, max_side=max_side)


# --------------------------------------------------------------------------- entry point


def _resolve_path(config: DataConfig) -> Path | None:
    """The dataset as an existing folder, None for a name, or UserError for a missing path.

    An existing folder wins over a TFDS name; a spec that can only be a path
    (absolute, ./, ../, ~, trailing /) and does not exist is an error.
    """
    spec = config.dataset
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"dataset path {path} is a file: point to a folder of class sub-folders or of IDX files")
    if spec.startswith(("/", "./", "../", "~")) or spec.endswith("/"):
        raise UserError(f"dataset folder {spec} does not exist: check the path")
    return None


def _resolve_augment(augment: str, max_side: int | None) -> str:
    """'auto' -> flip_crop for small images (<= 64 px), inception otherwise."""
    if augment != "auto":
        return augment
    return "flip_crop" if max_side is not None and max_side <= SMALL_IMAGE_MAX_SIDE else "inception"


def load_data(config: DataConfig) -> DataBundle:
    """Open the dataset ``config`` names and describe it; pipelines are built when asked for.

    Raises :class:`UserError` (and writes nothing) on bad settings or unusable data.
    """
    config.validate()
    if config.data_dir and not Path(config.data_dir).expanduser().is_dir():
        raise UserError(f"data_dir {config.data_dir} is not an existing folder: create it or fix the path")
    if config.dataset == "sample":
        source = _load_sample(config)
    elif config.dataset == "fashion_mnist":
        source = _load_fashion_mnist(config)
    else:
        path = _resolve_path(config)
        if path is None:
            source = _load_tfds(config.dataset, config)
        elif find_idx_files(path) is not None:
            source = _load_idx(path, config)
        else:
            source = _load_folder(path, config)
    counts = {name: source.splits[name].count for name in SPLITS}
    bundle = DataBundle(
        config=config,
        class_names=source.class_names,
        num_classes=len(source.class_names),
        counts=counts,
        channels=config.channels or source.channels,
        source_channels=source.channels,
        source_size=source.size,
        augment=_resolve_augment(config.augment, source.max_side),
        splits=source.splits,
    )
    log.info("%s: %s classes, %s examples, %s augmentation", config.dataset, bundle.num_classes, counts,
             bundle.augment)
    return bundle
