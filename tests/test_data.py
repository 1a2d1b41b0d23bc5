"""Tests of inception_keras.data on real data: the bundled sample, the full Fashion-MNIST IDX
files, image folders written by fixtures, and TFDS (where only TFDS's own data is mocked)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import time
import zipfile
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from inception_keras import data
from inception_keras.data import DataConfig, UserError, load_data, read_idx

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "fashion_mnist_sample.npz"
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def batches(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a dataset of (images, int labels) as two arrays."""
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def image_keys(images: np.ndarray) -> Counter:
    """A multiset of images (exact float bytes), to compare datasets whose order differs."""
    return Counter(image.tobytes() for image in images)


def listing(folder: Path) -> list[str]:
    """Every path under ``folder``, to check that nothing was written."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- bundled sample


@pytest.fixture(scope="module")
def sample():
    return load_data(DataConfig())


def test_sample_counts_classes_and_carve(sample):
    assert sample.class_names == FASHION_NAMES
    assert sample.num_classes == 10
    assert sample.counts == {"train": 4500, "val": 500, "test": 1000}
    assert np.bincount(sample.labels("train")).tolist() == [450] * 10
    assert np.bincount(sample.labels("val")).tolist() == [50] * 10
    assert np.bincount(sample.labels("test")).tolist() == [100] * 10
    assert (sample.channels, sample.source_channels, sample.source_size) == (1, 1, (28, 28))
    assert sample.augment == "flip_crop"  # "auto" on 28 px images
    assert sample.input_shape == (32, 32, 1)


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


def test_sample_is_the_seeded_subset_of_the_full_files(fashion_mnist_dir, tmp_path):
    """The bundled arrays are the full set's images at the stored indices, and the script rebuilds them bytewise."""
    full_train = read_idx(fashion_mnist_dir / "train-images-idx3-ubyte.gz")
    full_test_labels = read_idx(fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    with np.load(SAMPLE) as sample:
        assert np.array_equal(sample["x_train"], full_train[sample["train_index"]])
        assert np.array_equal(sample["y_test"], full_test_labels[sample["test_index"]])
    rebuilt = tmp_path / "sample.npz"
    subprocess.run([sys.executable, str(REPO / "data" / "make_fashion_mnist_sample.py"), str(fashion_mnist_dir),
                    str(rebuilt)], check=True, capture_output=True)
    assert hashlib.sha256(rebuilt.read_bytes()).digest() == hashlib.sha256(SAMPLE.read_bytes()).digest()


def test_sample_lookup_order(tmp_path, monkeypatch):
    """data_dir, then the checkout's data/, then the installed share/ folders (prefix, then user base)."""
    order = data.sample_search_path(tmp_path)
    assert order[0] == tmp_path / data.SAMPLE_FILE
    assert order[1] == REPO / "data" / data.SAMPLE_FILE
    assert order[2] == Path(sys.prefix, "share", "inception_keras", data.SAMPLE_FILE)
    assert order[3].parent.parent.name == "share" and order[3].parent.name == "inception_keras"
    assert data.find_sample() == REPO / "data" / data.SAMPLE_FILE
    (tmp_path / data.SAMPLE_FILE).write_bytes(SAMPLE.read_bytes())
    assert data.find_sample(tmp_path) == tmp_path / data.SAMPLE_FILE

    # As installed from a wheel: the module lives in site-packages, the sample in <prefix>/share/inception_keras.
    prefix = tmp_path / "venv"
    shared = prefix / "share" / "inception_keras"
    shared.mkdir(parents=True)
    (shared / data.SAMPLE_FILE).write_bytes(SAMPLE.read_bytes())
    monkeypatch.setattr(data, "__file__", str(prefix / "lib" / "site-packages" / "inception_keras" / "data.py"))
    monkeypatch.setattr(sys, "prefix", str(prefix))
    assert data.find_sample() == shared / data.SAMPLE_FILE
    assert data.default_tfds_dir() is None  # installed: TFDS's own default data_dir
    assert load_data(DataConfig()).counts["test"] == 1000
    (shared / data.SAMPLE_FILE).unlink()
    monkeypatch.setattr(data.site, "getuserbase", lambda: str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="not found in"):
        data.find_sample()


# --------------------------------------------------------------------------- full Fashion-MNIST (IDX)


def test_full_fashion_mnist_from_idx(fashion_mnist_dir):
    bundle = load_data(DataConfig(dataset="fashion_mnist", data_dir=str(fashion_mnist_dir), batch_size=100))
    assert bundle.counts == {"train": 54000, "val": 6000, "test": 10000}
    assert bundle.class_names == FASHION_NAMES
    assert np.bincount(bundle.labels("val")).tolist() == [600] * 10
    with gzip.open(fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz") as f:
        raw_labels = f.read()
    with gzip.open(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz") as f:
        raw_images = f.read()
    assert raw_labels[:4] == b"\x00\x00\x08\x01" and raw_images[:4] == b"\x00\x00\x08\x03"
    assert list(raw_labels[8:18]) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert bundle.labels("test")[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert np.array_equal(bundle.labels("test"), np.frombuffer(raw_labels, np.uint8, offset=8))
    first = np.frombuffer(raw_images, np.uint8, count=784, offset=16).reshape(28, 28)
    assert np.array_equal(read_idx(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz")[0], first)
    images, labels = next(iter(bundle.eval_dataset("test")))
    expected = tf.image.resize(first[None, ..., None].astype(np.float32), (32, 32)) / 127.5 - 1
    np.testing.assert_allclose(images[0], expected[0], atol=1e-6)
    assert labels[0] == 9


def test_fashion_mnist_default_folder_is_the_debian_package(fashion_mnist_dir):
    bundle = load_data(DataConfig(dataset="fashion_mnist"))
    assert bundle.counts["train"] + bundle.counts["val"] == 60000 and bundle.counts["test"] == 10000


# --------------------------------------------------------------------------- IDX parsing


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)
    return path


def make_idx_dir(folder: Path, labels: list[int], gz: bool = True, names: list[str] | None = None) -> Path:
    """A small MNIST-format folder: images whose every pixel equals 10 * their position."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    images = (np.arange(len(labels), dtype=np.uint8)[:, None, None] * 10 * np.ones((1, 28, 28), np.uint8))
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.array(labels))
    if names is not None:
        (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return folder


def test_idx_folder_plain_and_gzipped(tmp_path):
    labels = [0, 1, 2] * 8
    for gz in (True, False):
        folder = make_idx_dir(tmp_path / f"gz{gz}", labels, gz=gz, names=["a", "b", "c"])
        bundle = load_data(DataConfig(dataset=str(folder), augment="none"))
        assert bundle.class_names == ["a", "b", "c"]
        assert bundle.counts == {"train": 21, "val": 3, "test": 24}
        test_images, test_labels = batches(bundle.eval_dataset("test"))
        assert test_labels.tolist() == labels
        np.testing.assert_allclose(test_images[5].mean(), 50 / 127.5 - 1, atol=1e-6)
    folder = make_idx_dir(tmp_path / "digits", [0, 1, 2, 3] * 3)
    assert load_data(DataConfig(dataset=str(folder))).class_names == ["0", "1", "2", "3"]


@pytest.mark.parametrize("content, message", [
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated or corrupt"),
    (b"\x12\x34\x56\x78\x00\x00\x00\x01\x01", "magic number 0x12345678"),
    (b"", "magic number 0xempty"),
])
def test_read_idx_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(UserError, match="corrupt or truncated") as error:
        read_idx(path)
    assert str(path) in str(error.value)


# --------------------------------------------------------------------------- image folders


def write_image(path: Path, mode: str, value: int, size: tuple[int, int] = (40, 30)) -> None:
    """A solid image whose pixels encode ``value`` (gray level, or RGB(A) (value, 255 - value, 7[, 128]))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"L": value, "RGB": (value, 255 - value, 7), "RGBA": (value, 255 - value, 7, 128)}[mode]
    Image.new(mode, size, colour).save(path)


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Three classes of 10 images each: PNG and JPEG, gray, RGB and RGBA, two sizes, plus one corrupt file."""
    root = tmp_path / "shapes"
    kinds = [("png", "L"), ("jpg", "L"), ("png", "RGB"), ("jpg", "RGB"), ("png", "RGBA")]
    for c, name in enumerate(["circle", "square", "triangle"]):
        for i in range(10):
            ext, mode = kinds[i % len(kinds)]
            write_image(root / name / f"{i:02d}.{ext}", mode, 20 + 70 * c + 6 * i, (40, 30) if i % 2 else (24, 24))
    (root / "square" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "square" / "notes.txt").write_text("ignored: not an image")
    return root


def test_folder_with_carved_splits_skips_the_corrupt_image(mixed_folder):
    before = listing(mixed_folder)
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable image.*broken\.jpg"):
        bundle = load_data(DataConfig(dataset=str(mixed_folder), augment="none", batch_size=8))
    assert listing(mixed_folder) == before
    assert bundle.class_names == ["circle", "square", "triangle"]
    assert bundle.counts == {"train": 24, "val": 3, "test": 3}  # test 10% (>= 1 per class), then val
    for split in ("val", "test"):
        assert sorted(bundle.labels(split).tolist()) == [0, 1, 2]
    assert (bundle.source_channels, bundle.channels, bundle.source_size) == (3, 3, None)
    assert data._resolve_augment("auto", 40) == "flip_crop" and bundle.augment == "none"
    assert bundle.train_dataset().cardinality() == 3  # 24 images in batches of 8: Keras can count steps
    seen = []
    for split in ("train", "val", "test"):
        images, labels = batches(bundle.eval_dataset(split))
        assert images.shape == (bundle.counts[split], 32, 32, 3)
        assert np.array_equal(labels, bundle.labels(split))
        seen += [int(round((img[16, 16, 0] + 1) * 127.5)) for img in images]
    # Every image lands in exactly one split (its red channel identifies it; JPEG is within 2 levels).
    expected = sorted(20 + 70 * c + 6 * i for c in range(3) for i in range(10))
    assert len(seen) == 30 and np.abs(np.sort(seen) - expected).max() <= 2


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


def test_a_missing_relative_folder_is_reported_as_a_missing_folder_not_a_tfds_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in ("qa/ds/rgba", "qa/rgba"):
        with pytest.raises(UserError, match=rf"dataset folder {spec} does not exist \({tmp_path / spec} is not a "
                                            r"folder\) and .* is not a TFDS dataset either: check the path"):
            load_data(DataConfig(dataset=spec))


def test_folder_pixels_gray_rgb_rgba(tmp_path):
    root = tmp_path / "colours"
    write_image(root / "gray" / "a.png", "L", 200)
    write_image(root / "gray" / "b.bmp", "L", 100)
    write_image(root / "gray" / "c.gif", "L", 60)
    write_image(root / "rgba" / "a.png", "RGBA", 50)
    write_image(root / "rgba" / "b.png", "RGBA", 80)
    write_image(root / "rgba" / "c.png", "RGBA", 90)
    for name in ("train", "val", "test"):
        (root / name).mkdir()
    for split, files in {"train": ["a", "b"], "val": ["c"], "test": ["c"]}.items():
        for cls in ("gray", "rgba"):
            for f in files:
                match = next((root / cls).glob(f"{f}.*"))
                (root / split / cls).mkdir(exist_ok=True)
                (root / split / cls / match.name).write_bytes(match.read_bytes())
    for cls in ("gray", "rgba"):
        for f in (root / cls).iterdir():
            f.unlink()
        (root / cls).rmdir()
    bundle = load_data(DataConfig(dataset=str(root), augment="none"))
    assert bundle.counts == {"train": 4, "val": 2, "test": 2}
    assert (bundle.source_channels, bundle.source_size) == (3, (30, 40))
    images, labels = batches(bundle.eval_dataset("train"))
    pixels = np.round((images[:, 10, 10] + 1) * 127.5).astype(int).tolist()
    assert labels.tolist() == [0, 0, 1, 1]
    assert pixels == [[200, 200, 200], [100, 100, 100], [50, 205, 7], [80, 175, 7]]  # gray tiled, alpha dropped
    gray = load_data(DataConfig(dataset=str(root), channels=1, augment="none"))
    luma, _ = batches(gray.eval_dataset("val"))
    assert luma.shape == (2, 32, 32, 1)
    np.testing.assert_allclose((luma[:, 5, 5, 0] + 1) * 127.5, [60, 0.299 * 90 + 0.587 * 165 + 0.114 * 7], atol=1)


def test_gray_folder_keeps_one_channel_and_big_images_get_inception(tmp_path):
    for c in range(2):
        for i in range(5):
            write_image(tmp_path / "big" / f"c{c}" / f"{i}.png", "L", 40 * c + i, (100, 80))
    bundle = load_data(DataConfig(dataset=str(tmp_path / "big")))
    assert bundle.counts == {"train": 6, "val": 2, "test": 2}  # at least one per class carved
    assert (bundle.source_channels, bundle.channels, bundle.source_size) == (1, 1, (80, 100))
    assert bundle.augment == "inception"
    images, _ = next(iter(bundle.train_dataset(heads=None)))
    assert images.shape == (6, 32, 32, 1)


# --------------------------------------------------------------------------- determinism and augmentation


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


# --------------------------------------------------------------------------- TFDS


def write_tfds_metadata(data_dir: Path, name: str, splits: dict[str, int]) -> None:
    """Write the real dataset_info.json of a TFDS builder with the given split sizes (no examples)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(data_dir))
    template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name=builder.name,
                                             filetype_suffix="tfrecord")
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=0,
                            filename_template=template.replace(split=split))
        for split, count in splits.items()]))
    Path(builder.data_dir).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)


@pytest.mark.parametrize("name, splits, expected, shape", [
    ("mnist", {"train": 80, "test": 80}, {"train": 70, "val": 10, "test": 80}, (32, 32, 1)),  # >= 1 per class
    ("mnist", {"train": 80, "validation": 80, "test": 80}, {"train": 80, "val": 80, "test": 80}, (32, 32, 1)),
    ("tf_flowers", {"train": 60}, {"train": 48, "val": 6, "test": 6}, (32, 32, 3)),
])
def test_tfds_splits_with_mocked_examples(tmp_path, name, splits, expected, shape):
    """TFDS path end to end; only the examples are mocked (tfds.testing.mock_data), on real TFDS metadata."""
    import tensorflow_datasets as tfds

    write_tfds_metadata(tmp_path, name, splits)
    with tfds.testing.mock_data(num_examples=max(splits.values()), policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=str(tmp_path)):
        bundle = load_data(DataConfig(dataset=name, data_dir=str(tmp_path), batch_size=16))
        assert bundle.counts == expected
        assert bundle.num_classes == len(bundle.class_names) == (10 if name == "mnist" else 5)
        for split in ("train", "val", "test"):
            images, labels = batches(bundle.eval_dataset(split))
            assert images.shape == (expected[split], *shape)
            assert images.min() >= -1 and images.max() <= 1
            assert np.array_equal(labels, bundle.labels(split))
        images, labels = next(iter(bundle.train_dataset()))
        assert images.shape == (16, *shape) and set(labels) == {"main", "aux1", "aux2"}
    if name == "tf_flowers":
        assert bundle.source_size is None and bundle.augment == "inception"


def test_tfds_unprepared_dataset_offline_is_a_user_error(tmp_path):
    """No network here: the download must fail fast with where to put the files, and write nothing."""
    if data._network_available(timeout=3):
        pytest.skip("network reachable: this test needs an offline machine")
    started = time.monotonic()
    with pytest.raises(UserError, match=r"cannot be downloaded.*tfds build mnist"):
        load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path)))
    assert time.monotonic() - started < 30
    assert listing(tmp_path) == []
    # fashion_mnist with a data_dir lacking IDX files falls back to TFDS, and says both ways out.
    with pytest.raises(UserError, match=r"tfds build fashion_mnist.*or put its four IDX files"):
        load_data(DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path)))
    assert listing(tmp_path) == []


def test_tfds_manual_download_missing_or_broken_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"needs a manual download.*downloads/manual.*ILSVRC2012_img_train\.tar"):
        load_data(DataConfig(dataset="imagenet2012", data_dir=str(tmp_path)))
    assert listing(tmp_path) == []
    archive = tmp_path / "downloads" / "manual" / "ILSVRC2012_img_val.tar"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"not a tar archive")
    with pytest.raises(UserError, match=r"cannot prepare TFDS dataset 'imagenet2012'.*downloads/manual"):
        load_data(DataConfig(dataset="imagenet2012", data_dir=str(tmp_path)))
    assert listing(tmp_path) == ["downloads", "downloads/manual", "downloads/manual/ILSVRC2012_img_val.tar"]


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


def test_known_datasets_describe_themselves():
    assert {"sample", "fashion_mnist", "mnist", "cifar10", "imagenet2012"} <= set(data.KNOWN_DATASETS)
    assert all(isinstance(text, str) and text for text in data.KNOWN_DATASETS.values())


@pytest.mark.slow
def test_wheel_ships_the_sample_where_the_lookup_finds_it(tmp_path):
    """A non-editable install puts the sample in <prefix>/share/inception_keras (setup.cfg data_files)."""
    if "fashion_mnist_sample.npz" not in (REPO / "setup.cfg").read_text():
        pytest.xfail("setup.cfg does not ship data/fashion_mnist_sample.npz yet ([options.data_files])")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "inception_keras", source / "inception_keras",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data", source / "data", ignore=shutil.ignore_patterns(".gitignore"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("inception_keras-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = [n for n in archive.namelist() if n.endswith("/data/share/inception_keras/" + data.SAMPLE_FILE)]
        assert len(shipped) == 1
        assert archive.read(shipped[0]) == SAMPLE.read_bytes()


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
