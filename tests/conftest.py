"""Shared pytest set-up: inception_keras imported before any test module imports TensorFlow.

The package quiets TensorFlow's logs and turns oneDNN on (inception_keras/cpu.py), which only works before
TensorFlow's import, so the tests run the kernels a user's ``python -m inception_keras...`` runs.
"""

import os

import inception_keras  # noqa: F401


# --- data fixtures (tests/test_data.py, test_sources.py, test_augment.py, and any test needing Fashion-MNIST) ---

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """The full Fashion-MNIST IDX folder (Debian package dataset-fashion-mnist).

    Skips when the files are missing, unless INCEPTION_KERAS_REQUIRE_DATA=1 (CI sets it): then fails.
    INCEPTION_KERAS_FASHION_MNIST_DIR overrides the folder.
    """
    folder = Path(os.environ.get("INCEPTION_KERAS_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    missing = [name for name in FASHION_MNIST_FILES if not (folder / name).is_file()]
    if missing:
        message = (f"Fashion-MNIST IDX files missing from {folder}: {', '.join(missing)} "
                   "(apt-get install dataset-fashion-mnist)")
        if os.environ.get("INCEPTION_KERAS_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="module")
def sample():
    """The bundled sample with default settings, loaded once per test module (test_data, test_sources, test_augment)."""
    from inception_keras.data import DataConfig, load_data

    return load_data(DataConfig())


# --- one finished training run (tests/test_train.py checks its artifacts, tests/test_evaluate.py evaluates it) ---

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny run of the real training command on the bundled sample (``helpers.TINY``), finished."""
    from inception_keras import train

    from helpers import TINY

    out = tmp_path_factory.mktemp("runs")
    assert train.main(TINY + ["--output-dir", str(out), "--name", "tiny"]) == 0
    return out / "tiny"


# Fixtures that train or execute notebooks once per process: under pytest-xdist every test using one runs in the
# same worker (setup.cfg: --dist loadgroup), or each worker would pay for it.
SHARED_FIXTURES = {"tiny_run": "tiny_run", "executed": "notebooks"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        group = next((g for name, g in SHARED_FIXTURES.items() if name in getattr(item, "fixturenames", ())), None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
