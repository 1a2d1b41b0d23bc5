"""Dataset readers: a ``DataConfig.dataset`` spec to a :class:`Source` (class names, three splits, image facts).

:func:`~inception_keras.data.load_data` picks the reader; each delivers its splits as
uint8 images at their stored size, held in memory (:class:`ArraySplit`) or read on
every pass (:class:`StreamSplit`), for :class:`~inception_keras.data.DataBundle` to
batch, augment and scale.

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

Images whose sizes differ are resized (squashed, like Caffe's ImageNet LMDBs) to a
stored square of ``ceil(image_size * 8 / 7)`` px (256 for 224) when decoded; crops
then come from that square.  Sources of one fixed size up to that side (MNIST,
CIFAR) are kept at their own size.
"""

from __future__ import annotations

import concurrent.futures
import difflib
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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from .errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
STORE_SCALE = 8 / 7  # stored side of variable-size images relative to image_size (256 for 224)
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


class SourceSettings(Protocol):
    """The :class:`~inception_keras.data.DataConfig` fields a reader uses; a ``DataConfig`` is one.

    A protocol rather than ``DataConfig`` itself because :mod:`inception_keras.data`
    imports this module.
    """

    data_dir: str | None
    image_size: int
    val_split: float
    test_split: float
    seed: int


# --------------------------------------------------------------------------- split sources


@dataclass(frozen=True)
class ArraySplit:
    """A split held in memory: uint8 images (N, H, W, C) and int32 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def count(self) -> int:
        """Number of examples."""
        return len(self.labels)


@dataclass(frozen=True)
class StreamSplit:
    """A split read from files or TFDS on every pass, in a fixed order.

    ``make`` returns an unbatched dataset of (uint8 image of ``shape``, int32 label);
    ``labels`` returns the labels in the same order (read once, then kept).
    """

    make: Callable[[], tf.data.Dataset]
    labels: Callable[[], np.ndarray]
    count: int
    shape: tuple[int, int, int]


Split = ArraySplit | StreamSplit  # what a Source holds for each split


@dataclass(frozen=True)
class Source:
    """What a loader found: class names, the three splits and facts about the original images."""

    class_names: list[str]
    splits: dict[str, Split]
    channels: int
    size: tuple[int, int] | None
    max_side: int | None  # largest original side, None when unknown (drives augment="auto")


# --------------------------------------------------------------------------- stored images


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
                   config: SourceSettings, hint: str) -> dict[str, np.ndarray]:
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
                  test: tuple[np.ndarray, np.ndarray], config: SourceSettings, where: str) -> Source:
    """In-memory train/test arrays (N, H, W[, C]) -> a source with a carved validation split."""
    _check_classes(class_names, where)
    (x_train, y_train), (x_test, y_test) = train, test
    y_train = _check_labels(y_train, len(class_names), where)
    y_test = _check_labels(y_test, len(class_names), where)
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    positions = _carve_missing(y_train, has_val=False, has_test=True, config=config,
                               hint="lower val_split or add examples")
    splits = {name: ArraySplit(x_train[p], y_train[p]) for name, p in positions.items()}
    splits["test"] = ArraySplit(x_test, y_test)
    height, width, channels = x_train.shape[1:]
    return Source(list(class_names), splits, channels=min(channels, 3), size=(height, width),
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


def load_sample(config: SourceSettings) -> Source:
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


def load_idx(directory: Path, config: SourceSettings, class_names: Sequence[str] | None = None) -> Source:
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


def load_fashion_mnist(config: SourceSettings) -> Source:
    """Full Fashion-MNIST: IDX files in data_dir, else the Debian package's, else TFDS."""
    directory = Path(config.data_dir).expanduser() if config.data_dir else FASHION_MNIST_DIR
    if directory.is_dir() and find_idx_files(directory) is not None:
        return load_idx(directory, config, FASHION_MNIST_CLASSES)
    alternative = f" (or put its four IDX files, train-images-idx3-ubyte.gz and so on, in {directory})"
    return load_tfds("fashion_mnist", config, alternative)


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


def load_folder(root: Path, config: SourceSettings) -> Source:
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
    return Source(class_names, splits, channels=channels, size=size, max_side=int(shapes[:, :2].max()))


def _file_split(files: list[str], labels: np.ndarray, shape: tuple[int, int, int]) -> StreamSplit:
    """A split decoded from image files in parallel on every pass (or once, then cached)."""

    def make() -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(files, tf.string), tf.constant(labels, tf.int32)))
        return ds.map(lambda path, label: (_fit_image(_decode(path), shape), label),
                      num_parallel_calls=tf.data.AUTOTUNE)

    return StreamSplit(make, lambda: labels, len(labels), shape)


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
                labels: Callable[[], np.ndarray], count: int, keep: np.ndarray | None = None) -> StreamSplit:
    """A TFDS split, or the examples of it where ``keep`` is True, fitted to ``shape`` on every pass."""
    image_key, label_key = keys

    def make() -> tf.data.Dataset:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        if keep is not None:
            mask = tf.constant(keep)
            ds = ds.enumerate().filter(lambda i, _: tf.gather(mask, i)).map(lambda _, example: example)
        return ds.map(lambda ex: (_fit_image(ex[image_key], shape), tf.cast(ex[label_key], tf.int32)),
                      num_parallel_calls=tf.data.AUTOTUNE)

    return StreamSplit(make, labels, count, shape)


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


def load_tfds(name: str, config: SourceSettings, alternative: str = "") -> Source:
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
    def whole(split: str) -> StreamSplit:
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
    return Source(class_names, splits, channels=channels, size=size, max_side=max_side)
