"""Regenerate ``fashion_mnist_sample.npz``, the bundled Fashion-MNIST subset.

Draws, with a fixed seed, 500 training and 100 test images of each of the 10
classes from the full Fashion-MNIST IDX files (Debian package
``dataset-fashion-mnist`` puts them in ``/usr/share/datasets/fashion-mnist``) and
writes them as uint8 arrays in original file order.  The output is byte-identical
on every run: the draw is seeded and the zip entries carry a fixed timestamp.

Usage::

    python data/make_fashion_mnist_sample.py [IDX_DIR] [OUTPUT]

The IDX reader is deliberately independent of ``inception_keras.data`` so the
tests can cross-check one against the other.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np

SEED = 20170825  # the date Fashion-MNIST was published
TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEFAULT_IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "fashion_mnist_sample.npz"


def read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes into an array of its declared shape."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    if raw[:3] != b"\x00\x00\x08":
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def draw_balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``per_class`` indices of every class without replacement, returned sorted."""
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(picks)).astype(np.int32)


def write_npz_reproducibly(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` that ``np.load`` reads, with fixed entry timestamps so reruns give identical bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as entry:
                np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)


def main(argv: list[str]) -> int:
    """Build the sample from ``argv[0]`` (IDX folder) into ``argv[1]`` (output file)."""
    idx_dir = Path(argv[0]) if argv else DEFAULT_IDX_DIR
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    x_train = read_idx_gz(idx_dir / "train-images-idx3-ubyte.gz")
    y_train = read_idx_gz(idx_dir / "train-labels-idx1-ubyte.gz")
    x_test = read_idx_gz(idx_dir / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx_gz(idx_dir / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(SEED)
    train_index = draw_balanced(y_train, TRAIN_PER_CLASS, rng)
    test_index = draw_balanced(y_test, TEST_PER_CLASS, rng)
    write_npz_reproducibly(output, {
        "x_train": x_train[train_index],
        "y_train": y_train[train_index],
        "x_test": x_test[test_index],
        "y_test": y_test[test_index],
        "train_index": train_index,
        "test_index": test_index,
        "class_names": np.array(CLASS_NAMES),
    })
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    print(f"wrote {output} ({output.stat().st_size} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
