"""Helpers shared by several test files: the end-to-end tests that run the training command in subprocesses,
and the data tests (test_data.py, test_sources.py, test_augment.py) that read batches and write dataset files."""

from __future__ import annotations

import csv
import gzip
import json
import signal
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

# The tiny training run of the `tiny_run` fixture (tests/conftest.py): the bundled sample at 32 px, 2 epochs of
# 3 batches. With Polyak averaging (EMA), so the kill-and-resume test also covers the averaged weights and the
# swap state, and with op determinism: without it, float reductions can differ in the last digit between two
# processes under load (seen once in a full suite run: epoch-1 main_loss 2.8681571 vs 2.8681567), which grows.
TINY = ["--epochs", "2", "--max-train-batches", "3", "--max-val-batches", "2", "--batch-size", "32",
        "--image-size", "32", "--seed", "7", "--verbose", "epoch", "--ema", "--ema-momentum", "0.9",
        "--deterministic"]


def read_history(run_dir):
    """The rows of a run's history.csv."""
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def wait_for_epoch(state_file, epoch, process, timeout=600.0):
    """Poll the run's committed state until ``epoch`` epochs are done (or the process ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if state_file.exists() and json.loads(state_file.read_text())["epochs_done"] >= epoch:
            return
        time.sleep(0.05)
    raise AssertionError(f"epoch {epoch} was never committed (exit code {process.poll()})")


def kill_after_epoch(processes, run_dir, epoch=1, settle=0.0):
    """Wait until the chief (first process) commits ``epoch``, wait ``settle`` seconds, then SIGKILL every process."""
    try:
        wait_for_epoch(run_dir / "checkpoint" / "state.json", epoch, processes[0])
        time.sleep(settle)
    finally:
        for process in processes:
            process.send_signal(signal.SIGKILL)
            process.wait()


# --- data: batches read back, dataset files written ---


def batches(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a dataset of (images, int labels) as two arrays."""
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def listing(folder: Path) -> list[str]:
    """Every path under ``folder``, to check that nothing was written."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


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


def write_image(path: Path, mode: str, value: int, size: tuple[int, int] = (40, 30)) -> None:
    """A solid image whose pixels encode ``value`` (gray level, or RGB(A) (value, 255 - value, 7[, 128]))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"L": value, "RGB": (value, 255 - value, 7), "RGBA": (value, 255 - value, 7, 128)}[mode]
    Image.new(mode, size, colour).save(path)
