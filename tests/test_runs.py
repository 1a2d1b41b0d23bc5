"""Run directory: atomic writes, the commit order of an epoch, and the overwrite / resume policy."""

import json
from pathlib import Path

import pytest

from inception_keras.errors import UserError
from inception_keras.runs import (RunDir, RunState, atomic_path, check_run_name, check_writable, prepare,
                                  write_json)


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "model.keras"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".keras" and tmp != target
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"trunc")
            raise RuntimeError("killed while writing")
    assert target.read_bytes() == b"complete"  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.keras"]  # no temporary left behind


def test_commit_epoch_keeps_one_checkpoint_and_state_names_it(tmp_path):
    run = RunDir(tmp_path / "run")
    state = RunState()
    for epoch in (1, 2):
        state.epochs_done = epoch
        run.commit_epoch(state, lambda path, e=epoch: path.write_text(f"weights {e}"))
    assert sorted(p.name for p in run.checkpoint_dir.glob("*.keras")) == ["epoch-0002.keras"]
    loaded = run.load_state()
    assert loaded.epochs_done == 2 and run.checkpoint_path(loaded).read_text() == "weights 2"


def test_failed_checkpoint_write_keeps_the_previous_commit(tmp_path):
    run = RunDir(tmp_path / "run")
    state = RunState(epochs_done=1)
    run.commit_epoch(state, lambda path: path.write_text("good"))

    def crash(path):
        path.write_text("half")
        raise OSError("disk full")

    state.epochs_done = 2
    with pytest.raises(OSError):
        run.commit_epoch(state, crash)
    loaded = run.load_state()
    assert loaded.epochs_done == 1 and run.checkpoint_path(loaded).read_text() == "good"
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["epoch-0001.keras", "state.json"]


def make_run(tmp_path, finished=False, progress=True, config=None):
    run = RunDir(tmp_path / "run")
    write_json(run.file("config.json"), config or {"epochs": 3})
    if progress:
        run.commit_epoch(RunState(epochs_done=1), lambda p: p.write_text("w"))
    if finished:
        write_json(run.file("summary.json"), {})
    return run


def test_prepare_policy(tmp_path):
    assert prepare(RunDir(tmp_path / "new"), {"epochs": 3}, False, {"epochs"}) is False
    run = make_run(tmp_path)
    assert prepare(run, {"epochs": 3}, False, {"epochs"}) is True
    with pytest.raises(UserError, match=r"different settings \(epochs\)"):
        prepare(run, {"epochs": 5}, False, {"epochs"})


def test_finished_run_is_never_overwritten_silently(tmp_path):
    run = make_run(tmp_path, finished=True)
    with pytest.raises(UserError, match="finished run; pass --overwrite"):
        prepare(run, {"epochs": 3}, False, {"epochs"})
    assert run.file("summary.json").exists()
    assert prepare(run, {"epochs": 3}, True, {"epochs"}) is False
    assert not run.path.exists()


def test_corrupt_state_is_a_user_error(tmp_path):
    run = make_run(tmp_path)
    (run.checkpoint_dir / "state.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        run.load_state()


def test_check_writable_refuses_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not a writable directory"):
        check_writable(blocker / "runs")
    check_writable(tmp_path / "new" / "deeper")  # a missing directory under a writable one is fine
    assert list(tmp_path.iterdir()) == [blocker]  # the probe directory is gone again
    assert json.loads(write_json(tmp_path / "a.json", {"k": 1}).read_text()) == {"k": 1}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_check_writable_tries_a_real_write(tmp_path):
    # os.access says /proc is writable to root; only creating something there fails.
    with pytest.raises(UserError, match=r"cannot write to /proc/inception_keras_runs: /proc is not a writable "
                                        r"directory; choose another --out$"):
        check_writable(Path("/proc/inception_keras_runs"), "--out")


@pytest.mark.parametrize("name", ["..", ".", "", " ", "a/b", "../escaped", "/abs"])
def test_check_run_name_refuses_anything_but_one_plain_folder_name(name):
    with pytest.raises(UserError, match="--name must be a single folder name"):
        check_run_name(name)
    check_run_name("my-run_2.v1")  # dots inside a name are fine


def test_overwrite_removes_only_the_run_folder_itself(tmp_path):
    runs = tmp_path / "runs"
    keep = runs / "other" / "summary.json"
    keep.parent.mkdir(parents=True)
    keep.write_text("{}")
    # --name "..", "." (pathlib drops it: the run path is the output dir) or "other/.." would delete X or runs/
    for name in ("..", ".", "other/.."):
        with pytest.raises(UserError, match="refusing to delete"):
            prepare(RunDir(runs / name, output_dir=runs), {}, True, set())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (runs / "link").symlink_to(elsewhere)  # a run folder that is a link to another place
    with pytest.raises(UserError, match="refusing to delete"):
        prepare(RunDir(runs / "link", output_dir=runs), {}, True, set())
    assert keep.exists() and elsewhere.is_dir()
    assert prepare(RunDir(runs / "other", output_dir=runs), {}, True, set()) is False
    assert not (runs / "other").exists() and runs.is_dir() and elsewhere.is_dir()
