"""tf.distribute training: strategy choice, chief-only writes, and two real runs.

* MirroredStrategy over two logical CPU devices (a subprocess splits the CPU
  before TensorFlow starts), killed after epoch 1 and rerun, against a
  single-device run of the same command.
* MultiWorkerMirroredStrategy with two worker processes on loopback ports
  (TF_CONFIG), killed after epoch 1 and rerun: both exit 0 and one set of
  artifacts is written.
"""

import json
import math
import os
import socket
import subprocess
import sys
import types
import urllib.error
from pathlib import Path

import pytest
import tensorflow as tf

from inception_keras import distribute
from inception_keras import train as train_module
from inception_keras.errors import UserError, run_cli

from helpers import kill_after_epoch, read_history

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = {"config.json", "model.keras", "inference.keras", "history.csv", "logs", "curves.png", "report.md",
             "report.csv", "report.json", "report_heads.csv", "summary.json", "confusion_matrix.png",
             "per_class_f1.png", "misclassified.png"}
# Runs a training command on two logical CPU devices: the split must precede any other TensorFlow work.
TWO_CPUS = ("import sys, tensorflow as tf\n"
            "cpu = tf.config.list_physical_devices('CPU')[0]\n"
            "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
            "from inception_keras.train import cli\n"
            "cli()\n")
# No BatchNorm and no dropout, so one device and two replicas compute the same updates; plain SGD, so a wrong
# loss scale across replicas would change the result (Adam would hide it).
COMPARABLE = ["--epochs", "3", "--max-train-batches", "3", "--max-val-batches", "2", "--batch-size", "32",
              "--image-size", "32", "--seed", "7", "--verbose", "epoch", "--variant", "paper", "--no-aux-heads",
              "--dropout", "0", "--optimizer", "sgd", "--lr", "0.5", "--schedule", "constant", "--weight-decay", "0"]


def test_global_batch_and_learning_rate_scaling():
    assert distribute.scaled_learning_rate(0.1, "none", 512) == 0.1
    assert distribute.scaled_learning_rate(0.1, "linear", 512) == pytest.approx(0.2)
    assert distribute.scaled_learning_rate(0.1, "linear", 64) == pytest.approx(0.025)
    config = train_module.config_from_args(["--lr", "0.1", "--lr-scaling", "linear", "--batch-size", "128"])
    assert train_module.learning_rate_of(config) == pytest.approx(0.05)


def test_single_machine_strategies():
    default = distribute.make_strategy("default")
    assert default is tf.distribute.get_strategy() and default.num_replicas_in_sync == 1
    assert distribute.make_strategy("auto") is default  # no GPUs here
    assert distribute.is_chief(default) and distribute.worker_count(default) == 1
    mirrored = distribute.make_strategy("mirrored")  # the one CPU device of this process
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and distribute.is_chief(mirrored)


def fake_strategy(cluster, task_type, task_id):
    """An object with a real cluster resolver, standing in for a multi-worker strategy."""
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "chief", 0, True),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "worker", 0, False),
])
def test_only_the_chief_writes(cluster, task_type, task_id, chief):
    strategy = fake_strategy(cluster, task_type, task_id)
    assert distribute.is_chief(strategy) is chief
    assert distribute.worker_count(strategy) == sum(len(v) for v in cluster.values())
    assert distribute.task_name(strategy) == f"{task_type} {task_id}"


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not a valid cluster description"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "not a valid cluster"),
    ('{"task": {"type": "worker", "index": 0}}', "not a valid cluster"),
])
def test_bad_tf_config_is_a_user_error(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(UserError, match=message):
        distribute.make_strategy("multiworker")


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "multiworker"], "needs the TF_CONFIG environment variable"),
    (["--strategy", "tpu"], "no TPU found"),
    (["--strategy", "horovod"], "invalid choice"),
    (["--lr-scaling", "sqrt"], "invalid choice"),
])
def test_strategy_errors_exit_2_and_write_nothing(monkeypatch, tmp_path, capsys, argv, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert run_cli(train_module.main, argv + ["--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "runs").exists()


def test_a_tpu_name_that_cannot_be_looked_up_is_a_user_error(monkeypatch, tmp_path, capsys):
    """Outside Google Cloud the resolver looks the name up over HTTP and fails with a URLError (no network here)."""
    def resolver(tpu=None, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", resolver)
    with pytest.raises(UserError, match=r"^no TPU found \(<urlopen error \[Errno -2\] Name or service not known>\); "
                                        "pass --tpu NAME"):
        distribute.make_strategy("tpu", "bogus-name")
    argv = ["--strategy", "tpu", "--tpu", "bogus-name", "--output-dir", str(tmp_path / "runs")]
    assert run_cli(train_module.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no TPU found (<urlopen error"), err
    assert not (tmp_path / "runs").exists()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_grpc_tpu_address_where_nothing_listens_fails_in_one_line(tmp_path, capsys):
    """TensorFlow would wait forever on this address; the TCP probe ends it at once (connection refused)."""
    address = f"grpc://127.0.0.1:{_closed_port()}"
    argv = ["--strategy", "tpu", "--tpu", address, "--output-dir", str(tmp_path / "runs")]
    assert run_cli(train_module.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no TPU found: 127.0.0.1:"), err
    assert "does not accept connections (Connection refused" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_grpc_probe_timeout_listener_and_malformed_addresses(monkeypatch):
    def silent(address, timeout):
        raise TimeoutError("timed out")

    with socket.socket() as server:  # a listening socket completes the handshake without accept()
        server.bind(("127.0.0.1", 0))
        server.listen()
        distribute.check_grpc_reachable(f"grpc://127.0.0.1:{server.getsockname()[1]}", timeout=5)
        with pytest.raises(UserError, match="127.0.0.1:.* does not accept connections"):  # every address is probed
            distribute.check_grpc_reachable(f"grpc://127.0.0.1:{server.getsockname()[1]}, "
                                            f"grpc://127.0.0.1:{_closed_port()}", timeout=5)
    for address in ("grpc://no-port-here", "grpc://host:notaport", "http://host:8470"):
        with pytest.raises(UserError, match="is not a grpc://HOST:PORT address"):
            distribute.check_grpc_reachable(address)
    monkeypatch.setattr(distribute.socket, "create_connection", silent)
    with pytest.raises(UserError, match=r"^no TPU found: 10.1.2.3:8470 does not accept connections "
                                        r"\(no answer within 0.5 s\)"):
        distribute.check_grpc_reachable("grpc://10.1.2.3:8470", timeout=0.5)


def test_pipelines_are_sharded_by_data():
    ds = distribute.shard_by_data(tf.data.Dataset.range(8).batch(4))
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


def test_multi_worker_model_saves_and_loads_after_importing_only_the_package(tmp_path):
    from inception_keras import build_googlenet

    model = build_googlenet(4, input_shape=(32, 32, 1), aux_heads=False)
    wrapped = distribute.MultiWorkerModel(inputs=model.input, outputs=model.output, name=model.name)
    wrapped.save(tmp_path / "m.keras")
    code = ("import sys, keras, inception_keras\n"
            "m = keras.models.load_model(sys.argv[1], safe_mode=True)\n"
            "print(type(m).__name__, m.count_params())")
    result = run_to_completion([sys.executable, "-c", code, str(tmp_path / "m.keras")])
    assert result.stdout.split() == ["MultiWorkerModel", str(wrapped.count_params())]


def run_to_completion(argv, env=None):
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_after_epoch_one(processes, run_dir):
    """SIGKILL every process once the chief has committed epoch 1, and check the run was cut short."""
    kill_after_epoch(processes, run_dir)
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be interrupted"
    assert len(read_history(run_dir)) in (1, 2)


def metrics(run_dir):
    return [{k: float(v) for k, v in row.items()} for row in read_history(run_dir)]


@pytest.mark.slow
def test_mirrored_on_two_cpus_resumes_and_matches_one_device(tmp_path):
    out = tmp_path / "runs"
    argv = [sys.executable, "-c", TWO_CPUS, *COMPARABLE, "--strategy", "mirrored", "--output-dir", str(out),
            "--name", "mirrored"]
    run_dir = out / "mirrored"
    kill_after_epoch_one([subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)],
                         run_dir)
    resumed = run_to_completion(argv)
    assert "Resuming" in resumed.stdout
    assert ARTIFACTS <= {p.name for p in run_dir.iterdir()} and not (run_dir / "checkpoint").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["replicas"] == 2 and config["strategy"] == "mirrored"

    assert train_module.main(COMPARABLE + ["--strategy", "default", "--output-dir", str(out), "--name", "single"]) == 0
    mirrored, single = metrics(run_dir), metrics(out / "single")
    assert [r["epoch"] for r in mirrored] == [r["epoch"] for r in single] == [1, 2, 3]  # each epoch once
    assert all(math.isfinite(r["loss"]) for r in mirrored) and mirrored[-1]["loss"] != mirrored[0]["loss"]
    # Same updates up to float summation order: losses within 0.1%, accuracies within one image of 96 / 64.
    for row_m, row_s in zip(mirrored, single, strict=True):
        for key in ("loss", "val_loss"):
            assert row_m[key] == pytest.approx(row_s[key], rel=1e-3), (key, row_m, row_s)
        assert abs(row_m["accuracy"] - row_s["accuracy"]) <= 1 / 96 + 1e-6
        assert abs(row_m["val_accuracy"] - row_s["val_accuracy"]) <= 1 / 64 + 1e-6


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_workers(argv, count=2):
    """Start ``count`` training processes forming one MultiWorkerMirroredStrategy cluster on loopback ports."""
    cluster = {"worker": [f"localhost:{free_port()}" for _ in range(count)]}
    processes = []
    for index in range(count):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    return processes


@pytest.mark.slow
def test_two_workers_on_loopback_resume_and_write_one_set_of_artifacts(tmp_path):
    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "inception_keras.train", "--epochs", "3", "--max-train-batches", "3",
            "--max-val-batches", "2", "--batch-size", "32", "--image-size", "32", "--seed", "7", "--verbose", "epoch",
            "--strategy", "multiworker", "--output-dir", str(out), "--name", "cluster"]
    run_dir = out / "cluster"
    kill_after_epoch_one(start_workers(argv), run_dir)

    workers = start_workers(argv)
    results = [(p.communicate(timeout=900), p.returncode) for p in workers]
    for (stdout, stderr), code in results:
        assert code == 0, stderr[-3000:]
        assert "Resuming" in stdout  # every worker restored the chief's checkpoint
    assert "the chief writes" in results[1][0][0]

    assert [p.name for p in out.iterdir()] == ["cluster"]  # one run directory, no per-worker copies
    names = {p.name for p in run_dir.iterdir()}
    assert ARTIFACTS <= names and not (run_dir / "checkpoint").exists()
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2, 3]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["replicas"] == 2 and config["strategy"] == "multiworker"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 3 and 0.0 <= summary["splits"]["test"]["accuracy"] <= 1.0
