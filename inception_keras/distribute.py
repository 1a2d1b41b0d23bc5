"""Training on several devices and machines with ``tf.distribute``.

``--strategy`` picks one of TensorFlow's own strategies (:func:`make_strategy`):

* ``auto``: ``MirroredStrategy`` over all GPUs when more than one is visible,
  the default (single-device) strategy otherwise;
* ``default``: one device, no replication;
* ``mirrored``: synchronous data parallelism on one machine, over every GPU, or
  over every logical CPU device when there is no GPU (what the tests use);
* ``multiworker``: ``MultiWorkerMirroredStrategy`` over the machines listed in
  the ``TF_CONFIG`` environment variable (every worker runs the same command);
* ``tpu``: ``TPUStrategy`` on the TPU named by ``--tpu`` (``local`` on a TPU VM).

Decisions, the same for every strategy:

* ``--batch-size`` is the **global** batch: each of the N replicas gets
  ``batch / N`` images, and the loss is averaged over the global batch, so the
  same command computes the same update on one device or on many (up to
  per-replica BatchNorm statistics, see the README).
* The learning rate never changes with the number of replicas.  With
  ``--lr-scaling linear`` it is ``--lr * batch / 256`` (Goyal et al., 2017), so
  a larger global batch gets a proportionally larger rate; ``none`` (default)
  uses ``--lr`` as given.
* The input pipeline is sharded with ``AutoShardPolicy.DATA``: every worker
  builds the same seeded pipeline (epochs are pure functions of seed and epoch,
  see ``data.py``) and keeps its own part of each global batch.  ``FILE``
  sharding would not work for the in-memory sources and would change the
  shuffling with the number of workers.
* Only the chief (worker 0, or the ``chief`` task) writes the run directory; the
  other workers read its checkpoint to resume, so the run directory must be on
  a filesystem every worker sees (NFS, GCS, ...).

Keras 3.15's ``fit`` does not run under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585): it reduces the first input batch as one nested
structure and reduces scalar metrics along an axis they do not have.
:class:`MultiWorkerModel` works around both; the multi-worker test
(tests/test_distribute.py) fails if a Keras upgrade breaks the workaround.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from typing import Any

import keras
import tensorflow as tf
from keras import tree

from .errors import UserError

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
TPU_CONNECT_TIMEOUT = 30.0  # seconds to wait for a TCP answer from a grpc:// TPU address
LR_SCALINGS = ("none", "linear")
LR_REFERENCE_BATCH = 256


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name``; user errors become :class:`UserError`.

    Create it before any other TensorFlow work: ``MultiWorkerMirroredStrategy``
    must configure the runtime at program start.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy(devices=[d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        return multi_worker_strategy()
    if name == "tpu":
        return tpu_strategy(tpu)
    raise UserError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def multi_worker_strategy() -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``."""
    cluster = read_tf_config()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        raise UserError(f"cannot start multi-worker training ({exc}); run the training command as its own "
                        f"process, one per task in TF_CONFIG ({', '.join(cluster)})") from None


def read_tf_config() -> dict[str, list[str]]:
    """The cluster of ``TF_CONFIG``, checked well enough to fail with a clear message."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError("--strategy multiworker needs the TF_CONFIG environment variable (cluster and task); "
                        "see the README's 'Several machines' section")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        addresses = cluster[task["type"]]
        addresses[task["index"]]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        raise UserError(f"TF_CONFIG is not a valid cluster description ({type(exc).__name__}: {exc}); it needs "
                        '{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}') from None
    return cluster


def tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    """``TPUStrategy`` on the TPU named ``tpu`` (a name, a ``grpc://`` address, or ``local``).

    Every way of not finding it is one :class:`UserError`: no TPU here
    (ValueError / RuntimeError / OpError), and a TPU name the resolver cannot
    look up: outside Google Cloud it asks the GCE metadata server and the Cloud
    TPU API over HTTP, which fails with ``urllib.error.URLError`` (an OSError)
    or an ``http.client.HTTPException``.  A ``grpc://`` address is first probed
    with a plain TCP connection (:func:`check_grpc_reachable`): TensorFlow itself
    connects without a timeout, in C++ where Ctrl-C does not reach it, so an
    address where nothing answers would hang the command.
    """
    if tpu and tpu.startswith("grpc://"):
        check_grpc_reachable(tpu)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, OSError, http.client.HTTPException, tf.errors.OpError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise UserError(f"no TPU found ({message}); pass --tpu NAME (or 'local' on a TPU VM), "
                        "or choose another --strategy") from None


def check_grpc_reachable(addresses: str, timeout: float = TPU_CONNECT_TIMEOUT) -> None:
    """Raise a :class:`UserError` unless every ``grpc://host:port`` in ``addresses`` (comma-separated) accepts
    a TCP connection within ``timeout`` seconds.

    Only the TCP handshake is checked, not that a TPU serves there; a refused or silent address ends here in
    one line instead of in TensorFlow's unbounded connect.
    """
    for address in addresses.split(","):
        parsed = urllib.parse.urlsplit(address.strip())
        try:
            host, port = parsed.hostname, parsed.port
        except ValueError:
            host, port = None, None
        if parsed.scheme != "grpc" or not host or port is None:
            raise UserError(f"--tpu {address.strip()!r} is not a grpc://HOST:PORT address; pass a TPU name, "
                            "'local' on a TPU VM, or grpc://HOST:PORT")
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else exc.strerror or exc
            raise UserError(f"no TPU found: {host}:{port} does not accept connections ({reason}); check the "
                            "--tpu address and that the TPU is running, or choose another --strategy") from None


def cluster_tasks(strategy: tf.distribute.Strategy) -> dict[str, Any]:
    """The ``{task type: addresses}`` of a multi-worker strategy's cluster ({} for single-machine strategies)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(resolver, tf.distribute.cluster_resolver.TPUClusterResolver):
        return {}
    return resolver.cluster_spec().as_dict()


def worker_count(strategy: tf.distribute.Strategy) -> int:
    """Number of machines (chief and workers) training together."""
    tasks = cluster_tasks(strategy)
    return max(1, len(tasks.get("chief", [])) + len(tasks.get("worker", [])))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: the ``chief`` task, or worker 0 when there is none."""
    tasks = cluster_tasks(strategy)
    if not tasks:
        return True
    resolver = strategy.cluster_resolver
    if "chief" in tasks:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def task_name(strategy: tf.distribute.Strategy) -> str:
    """``worker 1`` / ``chief 0`` for messages; empty on one machine."""
    if not cluster_tasks(strategy):
        return ""
    return f"{strategy.cluster_resolver.task_type} {strategy.cluster_resolver.task_id}"


def scaled_learning_rate(learning_rate: float, scaling: str, global_batch: int) -> float:
    """The learning rate actually used: ``--lr`` as given, or linearly scaled from a batch of 256."""
    if scaling == "none":
        return learning_rate
    if scaling == "linear":
        return learning_rate * global_batch / LR_REFERENCE_BATCH
    raise UserError(f"unknown --lr-scaling {scaling!r}; choose one of {', '.join(LR_SCALINGS)}")


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Set the auto-shard policy to DATA: every worker reads the same batches and keeps its share."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def for_strategy(model: keras.Model, strategy: tf.distribute.Strategy) -> keras.Model:
    """``model`` itself, or on several machines a :class:`MultiWorkerModel` sharing its layers.

    Call it inside ``strategy.scope()``: Keras ties a model to the strategy it is created under.
    """
    if worker_count(strategy) == 1:
        return model
    return MultiWorkerModel(inputs=model.input, outputs=model.output, name=model.name)


@keras.saving.register_keras_serializable(package="inception_keras")
class MultiWorkerModel(keras.Model):
    """A functional model whose ``fit`` / ``evaluate`` run under ``MultiWorkerMirroredStrategy``.

    Same layers, weights and saved format as the functional model; it only
    changes two steps of Keras 3.15's TensorFlow trainer (keras-team/keras#20585):

    * building the compiled metrics from the first batch: Keras reduces the whole
      ``(x, y)`` structure across workers, which the collective strategy cannot
      do; the shapes of this worker's batch are all it needs.
    * the per-step logs: Keras reduces them with ``MEAN`` along axis 0, which
      scalars do not have; they get a leading axis of 1 here (the values are
      already synchronised across workers, so the mean is the value itself).
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is not None and worker_count(strategy) > 1:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _with_batch_axis(self, logs: dict[str, Any]) -> dict[str, Any]:
        if worker_count(self.distribute_strategy) == 1:
            return logs
        return tree.map_structure(lambda v: tf.expand_dims(v, 0), logs)

    def train_step(self, data):
        return self._with_batch_axis(super().train_step(data))

    def test_step(self, data):
        return self._with_batch_axis(super().test_step(data))
