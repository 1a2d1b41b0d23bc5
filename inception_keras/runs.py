"""The run directory: atomic file writes, the resume state, and the overwrite policy.

Every artifact is written to a temporary file in the same directory and renamed
into place (``os.replace`` is atomic on POSIX), so a kill never leaves a
truncated file under its final name.

Resume state lives in ``RUN_DIR/checkpoint/``: one ``epoch-NNNN.keras`` (model
plus optimizer state) per completed epoch and ``state.json`` naming the latest.
``state.json`` is written last, so it is the commit point of an epoch: a run
killed before it is rewritten resumes from the previous epoch, never from a
half-finished one.  ``summary.json`` is written last of all and marks a run as
finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The temporary name keeps the file's extension (Keras and matplotlib pick the
    format from it).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}.", suffix=suffix or final.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            tmp_path.chmod(0o644)  # mkstemp creates 0600; artifacts are meant to be shared
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, turning a missing or corrupt file into a one-line UserError."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; check the run directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); delete the run, or rerun the command that started it "
                        "with --overwrite") from None


@dataclass
class RunState:
    """What a resumed run needs besides the checkpointed model: progress, best so far, history."""

    epochs_done: int = 0
    checkpoint: str | None = None  # file name inside CHECKPOINT_DIR
    best_metric: float | None = None
    best_epoch: int | None = None
    ema_weights_in_model: bool = False
    rng_states: dict[str, list[int]] = field(default_factory=dict)  # dropout seed generators (not in .keras files)
    history: list[dict[str, float]] = field(default_factory=list)


class RunDir:
    """Paths and state of one run directory, ``output_dir/NAME`` (``output_dir`` defaults to the path's parent)."""

    def __init__(self, path: str | os.PathLike, output_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        self.output_dir = Path(output_dir) if output_dir is not None else self.path.parent

    def file(self, name: str) -> Path:
        """Path of an artifact inside the run."""
        return self.path / name

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def is_finished(self) -> bool:
        """A run is finished once its summary has been written."""
        return self.file(SUMMARY_FILE).exists()

    def has_progress(self) -> bool:
        """At least one epoch was committed."""
        return (self.checkpoint_dir / STATE_FILE).exists()

    def load_state(self) -> RunState:
        """The committed state, or a fresh one for a new run."""
        if not self.has_progress():
            return RunState()
        data = read_json(self.checkpoint_dir / STATE_FILE)
        return RunState(**data)

    def checkpoint_path(self, state: RunState) -> Path | None:
        """The model checkpoint the state refers to."""
        return self.checkpoint_dir / state.checkpoint if state.checkpoint else None

    def commit_epoch(self, state: RunState, save_checkpoint) -> None:
        """Save the epoch's checkpoint with ``save_checkpoint(path)``, then the state, then drop older checkpoints."""
        name = f"epoch-{state.epochs_done:04d}.keras"
        with atomic_path(self.checkpoint_dir / name) as tmp:
            save_checkpoint(tmp)
        state.checkpoint = name
        write_json(self.checkpoint_dir / STATE_FILE, asdict(state))
        for stale in self.checkpoint_dir.glob("epoch-*.keras"):
            if stale.name != name:
                stale.unlink()

    def clear_checkpoints(self) -> None:
        """Remove the resume checkpoints once the run has finished (the best model stays)."""
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)


def check_run_name(name: str) -> None:
    """Refuse a ``--name`` that is not one plain folder name (it would leave, or be, the output directory)."""
    separators = {"/", os.sep, os.altsep} - {None}
    if not name.strip() or name in (".", "..") or any(s in name for s in separators) or "\0" in name:
        raise UserError(f"--name must be a single folder name (no path separators, not '.' or '..', not empty), "
                        f"got {name!r}; put the parent folder in --output-dir")


def remove_run_dir(run_dir: RunDir) -> None:
    """Delete the run directory for ``--overwrite``, only if it is a real folder directly inside ``output_dir``.

    Resolved, the run folder must be a child of the resolved output directory:
    not the output directory itself (``--name .``), not above it (``..``), not a
    symlink to elsewhere, so nothing but the run itself can be removed.
    """
    path, output_dir = run_dir.path, run_dir.output_dir.resolve()
    if path.is_symlink() or path.resolve().parent != output_dir:
        raise UserError(f"refusing to delete {path}: it is not a folder directly inside {output_dir}; "
                        "remove it yourself or choose another --name")
    shutil.rmtree(path)


def prepare(run_dir: RunDir, config: dict[str, Any], overwrite: bool, comparable: set[str],
            chief: bool = True) -> bool:
    """Apply the overwrite / resume policy; return True when resuming an interrupted run.

    * a new directory: start;
    * an interrupted run with the same settings (keys in ``comparable``): resume;
    * a finished run, or an interrupted run with other settings: refuse unless ``overwrite``.

    Only the ``chief`` of a multi-worker run deletes anything; the other workers
    take the same decision from what they read.
    """
    if run_dir.path.exists() and not run_dir.path.is_dir():
        raise UserError(f"{run_dir.path} exists and is not a directory; choose another --output-dir / --name")
    if overwrite:
        if chief and run_dir.path.exists():
            remove_run_dir(run_dir)
        return False
    if run_dir.is_finished():
        raise UserError(f"{run_dir.path} holds a finished run; pass --overwrite to replace it "
                        "or --name to start another")
    if not run_dir.has_progress():
        return False
    saved = read_json(run_dir.file(CONFIG_FILE))
    changed = sorted(k for k in comparable if saved.get(k) != config.get(k))
    if changed:
        raise UserError(f"{run_dir.path} holds an interrupted run with different settings ({', '.join(changed)}); "
                        "rerun with the same options to resume, or pass --overwrite or --name")
    return True


def check_writable(directory: Path, option: str = "--output-dir") -> None:
    """Fail early, before any work, if files cannot be written under ``directory`` (named ``option`` for the user).

    Creates and removes an empty probe directory in ``directory`` or its nearest
    existing ancestor: ``os.access`` answers yes to root even where the kernel
    refuses (``/proc``, some mounts), and only a real write says otherwise.
    """
    probe = directory
    while not probe.exists():
        probe = probe.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe-", dir=probe))
    except OSError:
        raise UserError(f"cannot write to {directory}: {probe} is not a writable directory; "
                        f"choose another {option}") from None
