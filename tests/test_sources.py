"""Tests of inception_keras.sources on real data: the bundled sample, the full Fashion-MNIST IDX
files, image folders written by fixtures, and TFDS (where only TFDS's own data is mocked)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from inception_keras import data, sources
from inception_keras.data import DataConfig, UserError, load_data
from inception_keras.sources import read_idx

from helpers import batches, listing, make_idx_dir, write_idx, write_image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "fashion_mnist_sample.npz"
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# --------------------------------------------------------------------------- bundled sample


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
    order = sources.sample_search_path(tmp_path)
    assert order[0] == tmp_path / sources.SAMPLE_FILE
    assert order[1] == REPO / "data" / sources.SAMPLE_FILE
    assert order[2] == Path(sys.prefix, "share", "inception_keras", sources.SAMPLE_FILE)
    assert order[3].parent.parent.name == "share" and order[3].parent.name == "inception_keras"
    assert sources.find_sample() == REPO / "data" / sources.SAMPLE_FILE
    (tmp_path / sources.SAMPLE_FILE).write_bytes(SAMPLE.read_bytes())
    assert sources.find_sample(tmp_path) == tmp_path / sources.SAMPLE_FILE

    # As installed from a wheel: the module lives in site-packages, the sample in <prefix>/share/inception_keras.
    prefix = tmp_path / "venv"
    shared = prefix / "share" / "inception_keras"
    shared.mkdir(parents=True)
    (shared / sources.SAMPLE_FILE).write_bytes(SAMPLE.read_bytes())
    monkeypatch.setattr(sources, "__file__", str(prefix / "lib" / "site-packages" / "inception_keras" / "sources.py"))
    monkeypatch.setattr(sys, "prefix", str(prefix))
    assert sources.find_sample() == shared / sources.SAMPLE_FILE
    assert sources.default_tfds_dir() is None  # installed: TFDS's own default data_dir
    assert load_data(DataConfig()).counts["test"] == 1000
    (shared / sources.SAMPLE_FILE).unlink()
    monkeypatch.setattr(sources.site, "getuserbase", lambda: str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="not found in"):
        sources.find_sample()


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
    if sources._network_available(timeout=3):
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


# --------------------------------------------------------------------------- known datasets and the installed sample


def test_known_datasets_describe_themselves():
    assert {"sample", "fashion_mnist", "mnist", "cifar10", "imagenet2012"} <= set(sources.KNOWN_DATASETS)
    assert all(isinstance(text, str) and text for text in sources.KNOWN_DATASETS.values())


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
        shipped = [n for n in archive.namelist() if n.endswith("/data/share/inception_keras/" + sources.SAMPLE_FILE)]
        assert len(shipped) == 1
        assert archive.read(shipped[0]) == SAMPLE.read_bytes()
