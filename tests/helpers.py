"""Helpers shared by the end-to-end tests that run the training command in subprocesses."""

import csv
import json
import signal
import time

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
