"""Throughput benchmark: training and inference images/s, GFLOP/s, the matmul limit, the input pipeline.

``python -m inception_keras.benchmark`` measures, for one variant, image size,
batch size and precision, in one process and under the same load:

* ``matmul``: the machine's float32 matrix-multiply GFLOP/s (``tf.matmul`` of
  two N x N matrices, N = ``--matmul-size``), the practical limit;
* ``keras training``: a full training step of the three-head model compiled
  with :func:`~inception_keras.heads.compile_googlenet` (Keras' Adam; loss
  ``main + 0.3 aux1 + 0.3 aux2``), from in-memory tensors, with the
  TensorFlow speed-ups of :mod:`~inception_keras.speedups` (``--speedups``,
  all by default, as ``train`` applies them), and beside it ``keras
  training, no speed-ups``: the plain model in the same rounds;
* ``keras inference``: the inference model (``main`` head only; also
  without speed-ups) and the optimised one
  (:func:`~inception_keras.export.export_model`: BatchNorm folded into the
  convs, dropout removed), all through ``predict_on_batch``;
* with ``--xla``: the same training step and optimised inference with
  ``jit_compile=True``;
* with ``--also-variants``: the training step and optimised inference of other
  variants (e.g. ``paper``), timed in the same rounds;
* ``tflite``: the optimised model converted with
  :func:`~inception_keras.export.export_tflite` (``--tflite`` picks float32,
  float16, dynamic, int8; int8 is calibrated on random images here, which is
  fine for speed; accuracy is checked by ``inception_keras.export`` on real data);
* with ``--sub-batches N``: the optimised inference model with each batch
  split into N slices computed at once, one thread each, in a child process
  (:func:`sub_batch_worker`; TensorFlow's thread pools are fixed per process);
* ``torchvision``: ``torchvision.models.googlenet`` (aux heads on, Adam, the
  same loss weighting, float32) in a separate process so PyTorch and TensorFlow
  do not share thread pools; skipped with a note when torch is not installed;
* ``pipeline`` (with ``--dataset``): the real input pipeline of
  :mod:`inception_keras.data` alone, and training from it versus training from
  the same batch held in memory, at ``--pipeline-image-size``.

Every measurement is warmed up (``--warmup`` runs, which also trace and compile),
then timed ``--runs`` times, each run ``--steps`` batches; the rounds are
interleaved (one run of every contender per round) so a change in background
load hits all of them alike, and the median is reported.  GFLOP/s counts
``2 x`` the conv + dense multiply-adds of :mod:`inception_keras.flops` per image
for inference, ``3 x`` that (forward, input and weight gradients) of the
three-head model for training.

The table is printed and everything is written as JSON (``--output``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from .cpu import ONEDNN_VARIABLE, cpu_flags, onednn_enabled
from .errors import ArgumentParser, UserError, run_cli
from .export import TFLiteRunner, export_model, export_tflite, sub_batched
from .flops import count_multiply_adds, inference_flops, training_flops
from .googlenet import MIN_INPUT_SIZE, build_googlenet, dtype_policy
from .heads import compile_googlenet, inference_model
from .runs import check_writable, write_json
from .speedups import SPEEDUPS, accelerate, check_speedups
from .variants import VARIANTS

TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
HEADS = ("main", "aux1", "aux2")
PIPELINE_ONLY_BATCHES = 200
TORCH_WORKER = ("import sys, torch, torchvision; from inception_keras.benchmark import torch_worker; "
                "sys.exit(torch_worker(sys.argv[1:]))")
SUB_BATCH_WORKER = ("import sys; from inception_keras.benchmark import sub_batch_worker; "
                    "sys.exit(sub_batch_worker(sys.argv[1:]))")


@dataclass
class Settings:
    """What to benchmark (one command line)."""

    variant: str = "bn"
    also_variants: tuple[str, ...] = ()
    image_size: int = 224
    batch_size: int = 32
    num_classes: int = 1000
    channels: int = 3
    precision: str = "float32"
    warmup: int = 2
    runs: int = 5
    steps: int = 1
    xla: bool = False
    tflite: tuple[str, ...] = ("float32", "dynamic", "int8")
    torch: bool = True
    torch_channels_last: bool = True
    sub_batches: int = 0
    matmul_size: int = 4096
    dataset: str | None = None
    data_dir: str | None = None
    pipeline_image_size: int = 96
    output: str = "benchmark.json"
    speedups: tuple[str, ...] = SPEEDUPS


@dataclass
class Contender:
    """One timed thing: ``run()`` does one timed run of ``work`` units (images, or FLOPs for matmul).

    ``run`` returns None to be timed by the caller, or its own ``(wall, CPU)``
    seconds when the work happens in another process (the torch worker).
    Besides wall-clock time every run records the CPU time its process used;
    ``work / CPU seconds x cores`` is what the process would reach if it kept
    every core busy.  On a quiet machine it matches the wall-clock rate; on a
    shared one it is a rough guide only (it overstates code that does not scale
    across cores and understates code whose threads spin-wait, like OpenMP), so
    a gap between the two columns flags a contaminated run.
    """

    name: str
    task: str  # "training", "inference", "pipeline" or "matmul"
    run: Callable[[], tuple[float, float] | None]
    work: float
    flops_per_image: float | None = None
    note: str = ""
    baseline: bool = False  # the torchvision rows the others are compared with
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Median units per second (images/s, or FLOP/s for matmul)."""
        return self.work / statistics.median(self.seconds)

    @property
    def cpu_rate(self) -> float | None:
        """Units per second on otherwise idle cores estimated from the median CPU time (None if not recorded)."""
        if not self.cpu_seconds or statistics.median(self.cpu_seconds) <= 0:
            return None
        return self.work / statistics.median(self.cpu_seconds) * (os.cpu_count() or 1)


# --------------------------------------------------------------------------- environment


def cpu_name() -> str:
    """The CPU model as ``lscpu`` / ``/proc/cpuinfo`` name it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_allocator() -> str:
    """The malloc this process and its workers use: a preloaded tcmalloc / jemalloc / mimalloc, else the system's.

    torchvision's training speed depends on it (with glibc's malloc it maps its large tensors afresh every
    step; see the README's Performance section), so it is recorded with the results.  Child processes inherit
    ``LD_PRELOAD``, so the torch worker uses the same allocator.
    """
    for library in re.split(r"[:\s]+", os.environ.get("LD_PRELOAD", "")):
        for allocator in ("tcmalloc", "jemalloc", "mimalloc"):
            if allocator in Path(library).name:
                return allocator
    return "system malloc"


def machine_info() -> dict[str, Any]:
    """CPU, core count, GPUs and library versions, recorded with the results."""
    torch_version = None
    if importlib.util.find_spec("torch") is not None:
        with contextlib.suppress(Exception):
            from importlib.metadata import version
            torch_version = version("torch")
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "avx512": any(flag.startswith("avx512") for flag in cpu_flags()),
        "onednn": onednn_enabled(),
        "allocator": memory_allocator(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "torch": torch_version,
    }


def mixed_policy() -> str:
    """The mixed-precision policy this machine runs fast: float16 on GPUs, bfloat16 on CPUs that have it."""
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    if cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return "mixed_bfloat16"
    raise UserError("--precision mixed needs a GPU or a CPU with bfloat16 instructions (AVX512_BF16 or AMX); "
                    "this machine has neither: use --precision float32")


# --------------------------------------------------------------------------- contenders


def random_batch(settings: Settings, size: int, seed: int = 0) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """In-memory images in [-1, 1] and integer labels for every head."""
    images = tf.random.stateless_uniform((settings.batch_size, size, size, settings.channels), (seed, 1), -1, 1)
    labels = tf.random.stateless_uniform((settings.batch_size,), (seed, 2), 0, settings.num_classes, tf.int32)
    return images, {head: labels for head in HEADS}


def repeat(step: Callable[[], Any], steps: int) -> Callable[[], None]:
    """A run of ``steps`` calls of ``step`` (timed by the caller)."""
    def run() -> None:
        for _ in range(steps):
            step()
    return run


def build_model(settings: Settings, input_shape: tuple[int, int, int], num_classes: int,
                variant: str | None = None) -> keras.Model:
    """The three-head GoogLeNet (``settings.variant`` unless given) under the benchmark's precision."""
    with dtype_policy(settings_policy(settings)):
        return build_googlenet(num_classes, input_shape=input_shape, variant=variant or settings.variant)


def settings_policy(settings: Settings) -> str:
    """The Keras dtype policy of ``settings.precision``."""
    return "float32" if settings.precision == "float32" else mixed_policy()


def training_contender(name: str, model: keras.Model, batch: tuple[tf.Tensor, dict[str, tf.Tensor]],
                       steps: int, jit_compile: bool = False, speedups: tuple[str, ...] = ()) -> Contender:
    """A compiled three-head training step on one in-memory batch (``train_on_batch`` reuses its traced step),
    with the named :mod:`~inception_keras.speedups` applied."""
    accelerate(compile_googlenet(model, keras.optimizers.Adam(), jit_compile=jit_compile), speedups)
    images, labels = batch
    flops = training_flops(count_multiply_adds(model))
    return Contender(name, "training", repeat(lambda: model.train_on_batch(images, labels), steps),
                     work=steps * int(images.shape[0]), flops_per_image=flops)


def inference_contender(name: str, model: keras.Model, images: tf.Tensor, steps: int,
                        jit_compile: bool = False, speedups: tuple[str, ...] = ()) -> Contender:
    """``predict_on_batch`` of a single-output model, compiled (traced) once, with the named speed-ups."""
    model.compile(jit_compile=jit_compile)
    accelerate(model, speedups)
    flops = inference_flops(count_multiply_adds(model))
    return Contender(name, "inference", repeat(lambda: model.predict_on_batch(images), steps),
                     work=steps * int(images.shape[0]), flops_per_image=flops)


def tflite_contenders(settings: Settings, model: keras.Model, images: tf.Tensor, workdir: Path
                      ) -> tuple[list[Contender], list[str]]:
    """TFLite interpreters of the optimised model, one per quantization; notes for the ones skipped."""
    contenders, notes = [], []
    if settings.precision != "float32" and settings.tflite:
        return [], ["tflite skipped: converted from the float32 model only (use --precision float32)"]
    flops = inference_flops(count_multiply_adds(model))
    batch = images.numpy()
    calibration = tf.random.stateless_uniform((16, *images.shape[1:]), (7, 7), -1, 1).numpy()
    for quantization in settings.tflite:
        path = export_tflite(model, workdir / f"{quantization}.tflite", quantization,
                             representative_data=calibration if quantization == "int8" else None)
        runner = TFLiteRunner(path, settings.batch_size)
        note = "int8 calibrated on random images (speed only)" if quantization == "int8" else ""
        contenders.append(Contender(f"tflite {quantization}", "inference",
                                    repeat(lambda runner=runner: runner(batch), settings.steps),
                                    work=settings.steps * settings.batch_size, flops_per_image=flops, note=note))
    return contenders, notes


def matmul_contender(size: int) -> Contender:
    """float32 ``tf.matmul`` of two ``size`` x ``size`` matrices; its rate is FLOP/s."""
    a = tf.random.stateless_uniform((size, size), (1, 1))
    b = tf.random.stateless_uniform((size, size), (2, 2))

    @tf.function
    def product() -> tf.Tensor:
        return tf.reduce_sum(tf.matmul(a, b))

    return Contender("matmul", "matmul", repeat(lambda: product().numpy(), 1), work=2.0 * size ** 3,
                     note=f"float32 {size}x{size} @ {size}x{size}")


def torch_installed() -> bool:
    """Whether torch and torchvision can be imported (checked without importing them here)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "torchvision"))


class Worker:
    """A child process (``python -c code config``) that times one run of a named task per request.

    The child prints one JSON line when it is ready (facts about itself, kept as
    ``info``), then answers each request line ``{"task", "steps"}`` with its own
    wall and CPU seconds (see :func:`serve_timing_requests`), so the IPC is not timed.
    """

    def __init__(self, code: str, config: dict[str, Any], label: str):
        self.label = label
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                          os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen([sys.executable, "-c", code, json.dumps(config)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env)
        self.info = self._reply()

    def _reply(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            error = self.process.stderr.read().strip().splitlines()
            raise RuntimeError(f"the {self.label} worker stopped: {error[-1] if error else 'no output'}")
        return json.loads(line)

    def timed(self, task: str, steps: int) -> tuple[float, float]:
        """Wall and CPU seconds of ``steps`` steps of ``task``, timed in the worker."""
        self.process.stdin.write(json.dumps({"task": task, "steps": steps}) + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        return float(reply["seconds"]), float(reply["cpu_seconds"])

    def close(self) -> None:
        """Stop the worker."""
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


def serve_timing_requests(tasks: dict[str, Callable[[], Any]], info: dict[str, Any]) -> int:
    """Child side of :class:`Worker`: report ``info`` as ready, then time one run per stdin request."""
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(request["steps"]):
            tasks[request["task"]]()
        print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}),
              flush=True)
    return 0


def torch_worker_process(settings: Settings) -> Worker:
    """torchvision's googlenet in a child process.

    PyTorch and TensorFlow in one process compete for (and here crash on) their
    OpenMP / oneDNN thread pools, so torch runs apart, imported before TensorFlow.
    """
    config = {"image_size": settings.image_size, "batch_size": settings.batch_size,
              "num_classes": settings.num_classes, "channels": settings.channels,
              "channels_last": settings.torch_channels_last, "threads": os.cpu_count()}
    return Worker(TORCH_WORKER, config, "torch")


def torch_contenders(settings: Settings, worker: Worker, flops: dict[str, float]) -> list[Contender]:
    """Training and inference contenders served by ``worker`` (timed in the child, so IPC is excluded)."""
    layout = "channels_last" if settings.torch_channels_last else "contiguous"
    return [Contender(f"torchvision {task}", task, lambda task=task: worker.timed(task, settings.steps),
                      work=settings.steps * settings.batch_size, flops_per_image=flops[task],
                      note=f"torch {worker.info['torch']}, {layout}, {worker.info['threads']} threads",
                      baseline=True)
            for task in ("training", "inference")]


def torch_worker(argv: Sequence[str]) -> int:
    """Child-process side of :func:`torch_worker_process`: build, then serve timing requests."""
    import torch
    import torchvision

    config = json.loads(argv[0])
    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False,
                                         num_classes=config["num_classes"])
    size, batch = config["image_size"], config["batch_size"]
    images = torch.rand(batch, config["channels"], size, size) * 2 - 1
    labels = torch.randint(0, config["num_classes"], (batch,))
    if config["channels"] != 3:
        model.conv1.conv = torch.nn.Conv2d(config["channels"], 64, 7, 2, 3, bias=False)
    if config["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters())
    loss = torch.nn.CrossEntropyLoss()

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        out = model(images)
        total = loss(out.logits, labels) + 0.3 * (loss(out.aux_logits1, labels) + loss(out.aux_logits2, labels))
        total.backward()
        optimizer.step()

    def infer_step() -> None:
        model.eval()
        with torch.inference_mode():
            model(images)

    return serve_timing_requests({"training": train_step, "inference": infer_step},
                                 {"torch": torch.__version__, "torchvision": torchvision.__version__,
                                  "threads": torch.get_num_threads()})


def sub_batch_worker_process(settings: Settings) -> Worker:
    """The optimised inference model in a child process whose TensorFlow runs one thread per sub-batch."""
    config = {"variant": settings.variant, "image_size": settings.image_size, "batch_size": settings.batch_size,
              "num_classes": settings.num_classes, "channels": settings.channels,
              "dtype_policy": settings_policy(settings), "parts": settings.sub_batches}
    return Worker(SUB_BATCH_WORKER, config, "sub-batch")


def sub_batch_contender(settings: Settings, worker: Worker, flops_per_image: float) -> Contender:
    """The optimised inference model on ``settings.sub_batches`` concurrent slices, timed in ``worker``."""
    parts = settings.sub_batches
    return Contender(f"keras inference, BN folded, {parts} sub-batches", "inference",
                     lambda: worker.timed("inference", settings.steps),
                     work=settings.steps * settings.batch_size, flops_per_image=flops_per_image,
                     note=f"child process: {parts} slices at once, intra-op threads "
                          f"{worker.info['intra_op_threads']}, inter-op {worker.info['inter_op_threads']}")


def sub_batch_worker(argv: Sequence[str]) -> int:
    """Child side of :func:`sub_batch_worker_process`.

    TensorFlow's thread pools are fixed per process before its first op, so
    this runs apart: one intra-op thread and ``parts`` inter-op threads, the
    batch split into ``parts`` slices computed at once.  On 2 cores of an
    Intel Xeon (AVX-512), BN folded, 224 px, batch 32 that was 1.09-1.12x
    the default (two threads on the whole batch) in three runs, each way
    timed interleaved in one process (88-94 against 80-86 images/s);
    torchvision after its training warm-up got slower split the same way
    (55-57 against 68 images/s).
    """
    config = json.loads(argv[0])
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(config["parts"])
    size, channels = config["image_size"], config["channels"]
    with dtype_policy(config["dtype_policy"]):
        model = build_googlenet(config["num_classes"], input_shape=(size, size, channels), variant=config["variant"])
    infer = sub_batched(export_model(model), config["parts"])
    images = tf.random.stateless_uniform((config["batch_size"], size, size, channels), (0, 0), -1, 1)
    return serve_timing_requests({"inference": lambda: infer(images).numpy()},
                                 {"parts": config["parts"],
                                  "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                                  "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()})


def pipeline_bundle(settings: Settings) -> Any:
    """The ``--dataset`` to time the input pipeline of (a :class:`~inception_keras.data.DataBundle`), or None.

    An unknown or unreadable dataset is a :class:`UserError`: the user asked for
    this measurement, so it fails in one line before anything is timed rather
    than being skipped with a note.
    """
    if not settings.dataset:
        return None
    from .data import DataConfig, load_data

    try:
        return load_data(DataConfig(dataset=settings.dataset, data_dir=settings.data_dir,
                                    image_size=settings.pipeline_image_size, batch_size=settings.batch_size))
    except (ImportError, OSError) as exc:  # e.g. tensorflow_datasets missing for a TFDS name, an unreadable file
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot load --dataset {settings.dataset} ({reason}): fix --dataset / --data-dir or "
                        "leave --dataset out") from None


def pipeline_contenders(settings: Settings, bundle: Any) -> tuple[list[Contender], dict[str, Any]]:
    """The real dataset's pipeline alone, training from it, and training from one of its batches in memory.

    ``bundle`` is :func:`pipeline_bundle`'s dataset.
    """
    dataset = bundle.train_dataset(heads=HEADS).repeat()
    model = build_model(settings, bundle.input_shape, bundle.num_classes)
    accelerate(compile_googlenet(model, keras.optimizers.Adam()), settings.speedups)
    batches = iter(dataset)
    in_memory = next(batches)
    alone = bundle.train_dataset(heads=HEADS).repeat()
    flops = training_flops(count_multiply_adds(model))
    images = settings.steps * settings.batch_size

    def from_pipeline() -> None:
        batch_images, labels = next(batches)
        model.train_on_batch(batch_images, labels)

    info = {"dataset": settings.dataset, "image_size": settings.pipeline_image_size,
            "input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes,
            "train_images": bundle.counts.get("train"), "augment": bundle.augment}
    pulled = max(PIPELINE_ONLY_BATCHES, 20 * settings.steps)

    def pipeline_alone() -> None:
        # A fresh iterator per run: a long-lived one would fill its prefetch buffer while others are timed.
        batches_alone = iter(alone)
        for _ in range(pulled):
            next(batches_alone)

    return [
        Contender("pipeline only", "pipeline", pipeline_alone, work=pulled * settings.batch_size,
                  note=f"{settings.dataset}, {settings.pipeline_image_size} px, no model, incl. iterator start"),
        Contender("training, real pipeline", "pipeline", repeat(from_pipeline, settings.steps), work=images,
                  flops_per_image=flops, note=f"{settings.dataset} train_dataset(), augment={bundle.augment}"),
        Contender("training, in-memory batch", "pipeline",
                  repeat(lambda: model.train_on_batch(*in_memory), settings.steps), work=images,
                  flops_per_image=flops, note="one batch of the same dataset, reused"),
    ], info


# --------------------------------------------------------------------------- measuring and reporting


def measure(contenders: Sequence[Contender], warmup: int, runs: int, log: Callable[[str], None] = print) -> None:
    """Warm every contender up, then time ``runs`` interleaved rounds (one run of each per round)."""
    for contender in contenders:
        start = time.perf_counter()
        for _ in range(warmup):
            contender.run()
        log(f"  warmed up {contender.name} ({time.perf_counter() - start:.1f} s)")
    for round_index in range(runs):
        for contender in contenders:
            start, cpu_start = time.perf_counter(), time.process_time()
            own_timing = contender.run()
            wall, cpu = own_timing or (time.perf_counter() - start, time.process_time() - cpu_start)
            contender.seconds.append(wall)
            contender.cpu_seconds.append(cpu)
        log(f"  round {round_index + 1}/{runs} done (load average {os.getloadavg()[0]:.2f})")


def summarise(contenders: Sequence[Contender], matmul_flops: float | None) -> list[dict[str, Any]]:
    """One JSON-friendly row per contender, with GFLOP/s, the fraction of the matmul limit and x torchvision.

    ``vs_torchvision`` compares wall-clock rates measured in the same rounds;
    ``vs_torchvision_best`` compares with torchvision's fastest run instead of
    its median, the conservative ratio (torchvision's throughput varies most
    from run to run here); ``vs_torchvision_cpu`` compares the CPU-time
    estimates (steadier under load).
    """
    torch_rate = {c.task: c.rate for c in contenders if c.baseline}
    torch_best = {c.task: c.work / min(c.seconds) for c in contenders if c.baseline}
    torch_cpu_rate = {c.task: c.cpu_rate for c in contenders if c.baseline}
    rows = []
    for c in contenders:
        if c.task == "matmul":
            continue
        rate = c.rate
        gflops = rate * c.flops_per_image / 1e9 if c.flops_per_image else None
        rows.append({
            "name": c.name, "task": c.task, "images_per_second": rate,
            "runs_images_per_second": [c.work / s for s in c.seconds],
            "cpu_images_per_second": c.cpu_rate,
            "gflops": gflops,
            "matmul_fraction": gflops * 1e9 / matmul_flops if gflops and matmul_flops else None,
            "vs_torchvision": rate / torch_rate[c.task] if c.task in torch_rate else None,
            "vs_torchvision_best": rate / torch_best[c.task] if c.task in torch_best else None,
            "vs_torchvision_cpu": (c.cpu_rate / torch_cpu_rate[c.task]
                                   if c.cpu_rate and torch_cpu_rate.get(c.task) else None),
            "note": c.note,
        })
    return rows


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (what the README shows)."""
    lines = ["| what | task | images/s | GFLOP/s | % of matmul | x torchvision | x torchvision's best run "
             "| images/s from CPU time | x torchvision (CPU time) | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        fraction = row["matmul_fraction"] * 100 if row["matmul_fraction"] is not None else None
        lines.append(f"| {row['name']} | {row['task']} | {_cell(row['images_per_second'])} | "
                     f"{_cell(row['gflops'])} | {_cell(fraction, 0)} | {_cell(row['vs_torchvision'], 2)} | "
                     f"{_cell(row.get('vs_torchvision_best'), 2)} | "
                     f"{_cell(row.get('cpu_images_per_second'))} | {_cell(row.get('vs_torchvision_cpu'), 2)} | "
                     f"{row['note']} |")
    return "\n".join(lines)


def pipeline_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Training through the real pipeline as a fraction of training from memory."""
    by_name = {row["name"]: row["images_per_second"] for row in rows}
    real, memory = by_name.get("training, real pipeline"), by_name.get("training, in-memory batch")
    if real is None or memory is None:
        return None
    return {"pipeline_over_in_memory": real / memory, "slowdown_percent": (1 - real / memory) * 100}


# --------------------------------------------------------------------------- command line


def build_parser() -> ArgumentParser:
    """The benchmark's options."""
    d = Settings()
    parser = ArgumentParser(prog="python -m inception_keras.benchmark",
                            description="Measure GoogLeNet training / inference throughput against the machine's "
                                        "matmul limit and torchvision, and the input pipeline.")
    parser.add_argument("--variant", default=d.variant, choices=tuple(VARIANTS), help=f"default {d.variant}")
    parser.add_argument("--also-variants", default="",
                        help="comma-separated other variants whose training step and optimised inference are "
                             "timed in the same rounds (e.g. paper,torchvision)")
    parser.add_argument("--image-size", type=int, default=d.image_size, help=f"default {d.image_size}")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    parser.add_argument("--num-classes", type=int, default=d.num_classes, help=f"default {d.num_classes}")
    parser.add_argument("--channels", type=int, default=d.channels, choices=(1, 3), help=f"default {d.channels}")
    parser.add_argument("--precision", default=d.precision, choices=("float32", "mixed"),
                        help="mixed: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bfloat16 "
                             "instructions (softmax stays float32); default float32")
    parser.add_argument("--warmup", type=int, default=d.warmup, help=f"untimed runs first (default {d.warmup})")
    parser.add_argument("--runs", type=int, default=d.runs, help=f"timed runs, median reported (default {d.runs})")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"batches per run (default {d.steps})")
    parser.add_argument("--xla", action="store_true", help="also time training and inference with jit_compile")
    parser.add_argument("--tflite", default=",".join(d.tflite),
                        help="comma-separated TFLite exports to time: float32, float16, dynamic, int8, or "
                             f"'none' (default {','.join(d.tflite)})")
    parser.add_argument("--no-torch", action="store_true", help="skip the torchvision comparison")
    parser.add_argument("--torch-contiguous", action="store_true",
                        help="run torchvision in the default NCHW layout instead of channels_last")
    parser.add_argument("--sub-batches", type=int, default=d.sub_batches,
                        help="also time the optimised inference model with the batch split into this many "
                             "slices computed at once, one thread each, in a child process (TensorFlow's "
                             "thread pools are set per process); e.g. the number of cores; 0: off (default)")
    parser.add_argument("--matmul-size", type=int, default=d.matmul_size,
                        help=f"side of the float32 matmul that gives the machine limit (default {d.matmul_size})")
    parser.add_argument("--dataset", help="also time the input pipeline of this dataset (e.g. fashion_mnist)")
    parser.add_argument("--data-dir", help="where --dataset lives")
    parser.add_argument("--pipeline-image-size", type=int, default=d.pipeline_image_size,
                        help=f"image size of the pipeline measurement (default {d.pipeline_image_size})")
    parser.add_argument("--output", default=d.output, help=f"JSON results file (default {d.output})")
    parser.add_argument("--speedups", default="all",
                        help=f"TensorFlow speed-ups of the timed Keras models, comma-separated from "
                             f"{', '.join(SPEEDUPS)}, or all or none; beside them the plain model is timed "
                             "(default all)")
    return parser


def parse_speedups(text: str) -> tuple[str, ...]:
    """``--speedups``: all, none, or names from :data:`~inception_keras.speedups.SPEEDUPS`."""
    if text.strip().lower() in ("all", "none", ""):
        return SPEEDUPS if text.strip().lower() == "all" else ()
    try:
        return check_speedups(name.strip() for name in text.split(",") if name.strip())
    except ValueError as exc:
        raise UserError(f"--speedups: {exc}") from None


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    """Parse and validate the command line; raise :class:`UserError` before anything runs."""
    args = build_parser().parse_args(argv)
    tflite = () if args.tflite.strip().lower() in ("", "none") else tuple(
        q.strip() for q in args.tflite.split(",") if q.strip())
    unknown = [q for q in tflite if q not in TFLITE_QUANTIZATIONS]
    also = tuple(v.strip() for v in args.also_variants.split(",") if v.strip())
    checks = [
        (all(v in VARIANTS for v in also),
         f"--also-variants: choose from {', '.join(VARIANTS)}, got {args.also_variants}"),
        (not unknown, f"--tflite: unknown {', '.join(unknown)}; choose from {', '.join(TFLITE_QUANTIZATIONS)} "
                      "or none"),
        (args.image_size >= MIN_INPUT_SIZE, f"--image-size must be at least {MIN_INPUT_SIZE}"),
        (args.pipeline_image_size >= MIN_INPUT_SIZE, f"--pipeline-image-size must be at least {MIN_INPUT_SIZE}"),
        (args.batch_size >= 1 and args.runs >= 1 and args.steps >= 1,
         "--batch-size, --runs and --steps must be at least 1"),
        (args.warmup >= 0, "--warmup must be 0 or more"),
        (0 <= args.sub_batches <= args.batch_size, "--sub-batches must be between 0 and --batch-size"),
        (args.num_classes >= 2, "--num-classes must be at least 2"),
        (args.matmul_size >= 16, "--matmul-size must be at least 16"),
        (Path(args.output).suffix == ".json", f"--output must name a .json file, got {args.output}"),
        (not Path(args.output).is_dir(), f"--output {args.output} is a directory"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    check_writable(Path(args.output).absolute().parent, "--output")
    return Settings(speedups=parse_speedups(args.speedups),
                    variant=args.variant, also_variants=tuple(v for v in also if v != args.variant),
                    image_size=args.image_size, batch_size=args.batch_size,
                    num_classes=args.num_classes, channels=args.channels, precision=args.precision,
                    warmup=args.warmup, runs=args.runs, steps=args.steps, xla=args.xla, tflite=tflite,
                    torch=not args.no_torch, torch_channels_last=not args.torch_contiguous,
                    sub_batches=args.sub_batches, matmul_size=args.matmul_size, dataset=args.dataset,
                    data_dir=args.data_dir, pipeline_image_size=args.pipeline_image_size, output=args.output)


def keras_contenders(settings: Settings, workdir: Path) -> tuple[list[Contender], dict[str, Any], list[str]]:
    """Training, inference (plain and optimised, XLA when asked) and TFLite contenders; model facts; notes."""
    shape = (settings.image_size, settings.image_size, settings.channels)
    batch = random_batch(settings, settings.image_size)
    model = build_model(settings, shape, settings.num_classes)
    optimised = export_model(model)
    facts = {"multiply_adds_inference": count_multiply_adds(inference_model(model)),
             "multiply_adds_training": count_multiply_adds(model),
             "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
             "dtype_policy": settings_policy(settings), "speedups": list(settings.speedups)}
    fast = settings.speedups
    contenders = [
        training_contender("keras training", model, batch, settings.steps, speedups=fast),
        inference_contender("keras inference", inference_model(model), batch[0], settings.steps, speedups=fast),
        inference_contender("keras inference, BN folded", optimised, batch[0], settings.steps, speedups=fast),
    ]
    if fast:  # the plain model in the same rounds: what the speed-ups gain
        plain = build_model(settings, shape, settings.num_classes)
        contenders.insert(1, training_contender("keras training, no speed-ups", plain, batch, settings.steps))
        contenders.insert(3, inference_contender("keras inference, no speed-ups", inference_model(plain), batch[0],
                                                 settings.steps))
    if settings.xla:
        xla_model = build_model(settings, shape, settings.num_classes)
        contenders.insert(1, training_contender("keras training (XLA)", xla_model, batch, settings.steps, True))
        contenders.append(inference_contender("keras inference, BN folded (XLA)", export_model(model), batch[0],
                                              settings.steps, True))
    for variant in settings.also_variants:
        other = build_model(settings, shape, settings.num_classes, variant)
        contenders += [training_contender(f"keras training, {variant}", other, batch, settings.steps,
                                          speedups=fast),
                       inference_contender(f"keras inference, BN folded, {variant}", export_model(other), batch[0],
                                           settings.steps, speedups=fast)]
    tflite, notes = tflite_contenders(settings, optimised, batch[0], workdir)
    return contenders + tflite, facts, notes


def run_benchmark(settings: Settings, log: Callable[[str], None] = print, bundle: Any = None) -> dict[str, Any]:
    """Build every contender, measure them in interleaved rounds, and return the results as a dict.

    ``bundle``: the ``--dataset`` already loaded by :func:`pipeline_bundle` (loaded here when None).
    """
    if settings.dataset and bundle is None:
        bundle = pipeline_bundle(settings)
    notes: list[str] = []
    load_start = os.getloadavg()
    workers: list[Worker] = []
    with tempfile.TemporaryDirectory(prefix="inception_keras_benchmark.") as workdir:
        log("building ...")
        contenders, facts, more = keras_contenders(settings, Path(workdir))
        notes += more
        matmul = matmul_contender(settings.matmul_size)
        pipeline = None
        if bundle is not None:
            more_contenders, pipeline = pipeline_contenders(settings, bundle)
            contenders += more_contenders
        if settings.torch:
            if not torch_installed():
                notes.append("torchvision skipped: torch / torchvision are not installed "
                             "(pip install torch torchvision to compare)")
            else:
                try:
                    workers.append(torch_worker_process(settings))
                    flops = {"training": training_flops(facts["multiply_adds_training"]),
                             "inference": inference_flops(facts["multiply_adds_inference"])}
                    contenders += torch_contenders(settings, workers[-1], flops)
                except (RuntimeError, OSError, json.JSONDecodeError) as exc:
                    notes.append(f"torchvision skipped: {exc}")
        if settings.sub_batches:
            try:
                workers.append(sub_batch_worker_process(settings))
                contenders.append(sub_batch_contender(settings, workers[-1],
                                                      inference_flops(facts["multiply_adds_inference"])))
            except (RuntimeError, OSError, json.JSONDecodeError) as exc:
                notes.append(f"sub-batch inference skipped: {exc}")
        try:
            log(f"timing {len(contenders) + 1} contenders: {settings.warmup} warm-up + {settings.runs} runs "
                f"of {settings.steps} batch(es) each ...")
            measure([matmul, *contenders], settings.warmup, settings.runs, log)
        finally:
            for worker in workers:
                worker.close()
    matmul_flops = matmul.rate
    rows = summarise(contenders, matmul_flops)
    if pipeline is not None:
        pipeline.update(pipeline_summary(rows) or {})
    machine = machine_info()
    if machine["onednn"] is False:
        notes.append(f"TensorFlow ran without oneDNN ({ONEDNN_VARIABLE}={os.environ.get(ONEDNN_VARIABLE)}): "
                     "its Keras rows are not this machine's best (see inception_keras/cpu.py)")
    if settings.precision != "float32":
        notes.append(f"Keras rows run under {facts['dtype_policy']}; torchvision and the matmul limit are float32")
    return {
        "settings": asdict(settings),
        "machine": machine,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "matmul": {"size": settings.matmul_size, "gflops": matmul_flops / 1e9,
                   "runs_gflops": [matmul.work / s / 1e9 for s in matmul.seconds],
                   "cpu_gflops": (matmul.cpu_rate or 0) / 1e9},
        "model": facts,
        "results": rows,
        "pipeline": pipeline,
        "notes": notes,
    }


def format_report(results: dict[str, Any]) -> str:
    """The printed summary: settings, the matmul limit, the table and the notes."""
    s, m = results["settings"], results["machine"]
    lines = [
        f"GoogLeNet {s['variant']}, {s['image_size']} px, batch {s['batch_size']}, {s['num_classes']} classes, "
        f"{results['model']['dtype_policy']}; {m['cpu']} ({m['cpu_count']} cores, "
        f"{'AVX-512' if m.get('avx512') else 'no AVX-512'}), TF {m['tensorflow']} "
        f"(oneDNN {'on' if m.get('onednn') else 'off'}), "
        f"Keras {m['keras']}, {m.get('allocator', 'system malloc')}",
        f"multiply-adds per image: {results['model']['multiply_adds_inference'] / 1e9:.3f} G inference, "
        f"{results['model']['multiply_adds_training'] / 1e9:.3f} G with aux heads; "
        f"float32 matmul limit {results['matmul']['gflops']:.1f} GFLOP/s",
        "",
        format_table(results["results"]),
    ]
    if results["pipeline"] and "slowdown_percent" in results["pipeline"]:
        lines.append(f"\nreal pipeline vs in-memory training: {results['pipeline']['slowdown_percent']:+.1f}% "
                     "slower")
    load = results["load_average"]
    lines.append(f"\nload average at start {load['start'][0]:.2f}, at end {load['end'][0]:.2f}")
    lines += [f"note: {n}" for n in results["notes"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON. Returns the exit status."""
    settings = settings_from_args(argv)
    if settings.precision == "mixed":
        mixed_policy()
    bundle = pipeline_bundle(settings)
    results = run_benchmark(settings, log=lambda message: print(message, file=sys.stderr, flush=True),
                            bundle=bundle)
    print(format_report(results))
    write_json(settings.output, results)
    print(f"\nwritten {settings.output}")
    return 0


def cli() -> None:
    """Console entry point (``inception-keras-benchmark``)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
