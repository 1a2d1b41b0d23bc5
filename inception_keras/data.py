"""Datasets for GoogLeNet: a dataset spec in, tf.data pipelines for train / val / test out.

:func:`load_data` turns a :class:`DataConfig` into a :class:`DataBundle` holding the
class names, split sizes and channel facts the model needs, and builds the
pipelines on demand (:meth:`DataBundle.train_dataset`, :meth:`DataBundle.eval_dataset`).
The readers of each kind of ``DataConfig.dataset`` (bundled sample, IDX files, image
folders, TFDS) and the carving of missing splits are in :mod:`inception_keras.sources`,
the training augmentations (``DataConfig.augment``) in :mod:`inception_keras.augment`.

Normalisation: images are delivered as float32 in [-1, 1], ``x / 127.5 - 1`` of
the 0..255 pixels (the Inception convention), shape
``(batch, image_size, image_size, channels)``; labels are int32.  Grayscale is
tiled to RGB when ``channels=3``, RGB turned to luma (0.299 R + 0.587 G + 0.114 B)
when ``channels=1``, and an alpha channel is dropped.

Shuffling and augmentation are stateless functions of ``(seed, epoch,
batch)``: a run is repeatable, each epoch sees a new shuffle and new
augmentations, and a resumed run sees exactly the epochs it missed
(``train_dataset(epochs=range(k, n))``).

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

import functools
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from .augment import augment_batch, to_model_input
from .errors import UserError
from .sources import (ArraySplit, Split, StreamSplit, find_idx_files, load_fashion_mnist, load_folder, load_idx,
                      load_sample, load_tfds)
# Re-exported: defined here before the readers moved to sources.py, and imported from here by users.
from .sources import (KNOWN_DATASETS, SAMPLE_FILE, default_tfds_dir, find_sample,  # noqa: F401
                      read_idx, sample_search_path)

log = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 32  # the model's smallest input side
SPLITS = ("train", "val", "test")
AUGMENTATIONS = ("auto", "none", "flip_crop", "inception")
DEFAULT_HEADS = ("main", "aux1", "aux2")
SMALL_IMAGE_MAX_SIDE = 64  # "auto" augmentation: flip_crop up to this side, inception above
CACHE_MEMORY_FRACTION = 0.25


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
    splits: dict[str, Split] = field(default_factory=dict, repr=False)
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
        if isinstance(self._split("train"), StreamSplit):
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
            return augment_batch(images, size, channels, augment, batch_seed), labels

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
            lambda images, labels: (to_model_input(images, size, channels), labels),
            num_parallel_calls=tf.data.AUTOTUNE)
        return _finish(ds, heads)

    def labels(self, split: str) -> np.ndarray:
        """Int32 labels of ``split`` in :meth:`eval_dataset` order."""
        source = self._split(split)
        return np.array(source.labels if isinstance(source, ArraySplit) else source.labels(), dtype=np.int32)

    def _split(self, split: str) -> Split:
        if split not in self.splits:
            raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return self.splits[split]

    def _batches(self, split: str, shuffle_seed: tf.Tensor | None) -> tf.data.Dataset:
        """Batches of (uint8 images at stored size, int32 labels); shuffled when a seed (shape [2]) is given."""
        source = self._split(split)
        batch_size = self.config.batch_size
        if isinstance(source, ArraySplit):
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
        source = load_sample(config)
    elif config.dataset == "fashion_mnist":
        source = load_fashion_mnist(config)
    else:
        path = _resolve_path(config)
        if path is None:
            source = load_tfds(config.dataset, config)
        elif find_idx_files(path) is not None:
            source = load_idx(path, config)
        else:
            source = load_folder(path, config)
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
