"""Where a training step's (or an inference batch's) time goes, op by op, from TensorFlow's profiler.

``python -m inception_keras.profile --variant bn --image-size 224 --batch-size 32`` runs the three-head
training step of :mod:`inception_keras.benchmark` (or, with ``--task inference``, the optimised inference
model of :func:`~inception_keras.export.export_model`), with the :mod:`~inception_keras.speedups` the
training command uses, under ``tf.profiler`` and prints:

* milliseconds per step by op type (oneDNN's ``_MklNative`` prefixes dropped) and by group
  (convolutions, BatchNorm, pooling, ReLU, concatenation and its gradient slices, matmuls, XLA-compiled
  functions such as the optimizer's update and LRN, the rest);
* for the convolutions, milliseconds and GFLOP/s per kernel size and pass (forward, input gradient, filter
  gradient), from each op's layer and :func:`~inception_keras.flops.per_layer_multiply_adds`, which shows
  whether a convolution runs near the matmul limit or is memory-bound.

By default TensorFlow runs one op at a time here (``--inter-op-threads 1``), so op times add up to the step
and do not stretch each other (the step itself runs up to about 5% slower than with TensorFlow's default).  Op times are read from the
profiler's trace (the ``.xplane.pb`` it writes: events on the executor's ``tf_Compute`` threads are the ops,
named ``scope/op_name:OpType``).  Everything is also written as JSON (``--output``).
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import keras
import tensorflow as tf

from .benchmark import Settings, build_model, mixed_policy, random_batch, settings_policy
from .errors import ArgumentParser, UserError, run_cli
from .export import export_model
from .flops import per_layer_multiply_adds
from .googlenet import MIN_INPUT_SIZE
from .heads import compile_googlenet
from .runs import check_writable, write_json
from .speedups import accelerate
from .variants import VARIANTS

XLA_EXECUTABLE = "XLA executable"  # what a jit-compiled function's run is called here (it is not a TF op event)
XLA_RUN_EVENT = "CpuExecutable::ExecuteAsyncOnStream"
GROUPS = (  # (group, parts of op type names) in the order they are tried
    ("convolution", ("Conv2D", "DepthwiseConv2d")),  # also FusedConv2D, PadWithFusedConv2D (+ bias, ReLU)
    ("batch norm", ("FusedBatchNorm",)),
    ("pooling", ("MaxPool", "AvgPool")),
    ("relu", ("Relu",)),
    ("concat / slices / sums", ("ConcatV2", "Slice", "Split", "AddN")),
    ("matmul", ("MatMul", "FusedMatMul", "BatchMatMul")),  # dense layers
    ("XLA-compiled functions", (XLA_EXECUTABLE,)),  # the optimizer's update (inception_keras.optim), LRN
)
CONV_PASSES = {"Conv2DBackpropInput": "input gradient", "Conv2DBackpropFilter": "filter gradient"}
OP_EVENT = re.compile(r"^(?P<scope>[^:]+):(?P<type>[A-Za-z0-9_]+)$")  # excludes "Class::Method" events


def op_type(raw: str) -> str:
    """``_MklNativeConv2DBackpropFilter`` -> ``Conv2DBackpropFilter``: the op, without oneDNN's prefix."""
    return re.sub(r"^_?(MklNative|Mkl)?_?", "", raw)


def group_of(kind: str) -> str:
    """The :data:`GROUPS` entry an op type belongs to, or ``other``."""
    for group, prefixes in GROUPS:
        if any(part in kind for part in prefixes):
            return group
    return "other"


def op_events(xplane: Path) -> Iterable[tuple[str, str, float]]:
    """``(scope, op type, milliseconds)`` of every op the executor ran in a profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # TF's own copy of the trace format

    space = xplane_pb2.XSpace()
    space.ParseFromString(xplane.read_bytes())
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                match = OP_EVENT.match(name)
                if match:
                    yield match["scope"], op_type(match["type"]), event.duration_ps / 1e9
                elif name == XLA_RUN_EVENT:
                    yield "", XLA_EXECUTABLE, event.duration_ps / 1e9


def trace(step: Callable[[], Any], steps: int) -> list[tuple[str, str, float]]:
    """Run ``step`` ``steps`` times under the profiler; return the op events of those runs."""
    with tempfile.TemporaryDirectory(prefix="inception_keras_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                step()
        finally:
            tf.profiler.experimental.stop()
        traces = sorted(Path(logdir).rglob("*.xplane.pb"))
        if not traces:
            raise RuntimeError(f"the profiler wrote no trace under {logdir}")
        return list(op_events(traces[-1]))


def convolution_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """The model's convolution layers by name."""
    return {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


def layer_of(scope: str, layers: dict[str, keras.layers.Layer]) -> keras.layers.Layer | None:
    """The layer of ``layers`` whose name scope (``name`` or ``name_1`` ...) appears in an op's scope.

    A convolution fused with its bias and ReLU (inference) runs under the scope of the ReLU layer,
    ``<conv name>_relu`` (see :func:`~inception_keras.blocks.conv_unit`), so that suffix is tried too.
    """
    for part in scope.split("/"):
        name = re.sub(r"_\d+$", "", part)
        for candidate in (part, name, name.removesuffix("_relu")):
            if candidate in layers:
                return layers[candidate]
    return None


def summarise(events: Sequence[tuple[str, str, float]], model: keras.Model, steps: int,
              batch_size: int) -> dict[str, Any]:
    """Per-step milliseconds by op type and group, and the convolutions' time and GFLOP/s by kernel and pass."""
    by_type: Counter[str] = Counter()
    for _, kind, ms in events:
        by_type[kind] += ms / steps
    by_group: Counter[str] = Counter()
    for kind, ms in by_type.items():
        by_group[group_of(kind)] += ms
    total = sum(by_type.values())

    multiply_adds = per_layer_multiply_adds(model)
    layers = convolution_layers(model)
    conv_ms: Counter[tuple[str, str]] = Counter()  # (kernel, pass) -> ms per step
    conv_layers: dict[tuple[str, str], set[str]] = defaultdict(set)  # (kernel, pass) -> layers seen
    for scope, kind, ms in events:
        layer = layer_of(scope, layers)
        if group_of(kind) == "convolution" and layer is not None:
            key = ("x".join(str(side) for side in layer.kernel_size), CONV_PASSES.get(kind, "forward"))
            conv_ms[key] += ms / steps
            conv_layers[key].add(layer.name)
    conv_rows = [{"kernel": kernel, "pass": pass_, "ms_per_step": ms,
                  "gflops_per_s": 2 * batch_size * sum(multiply_adds[n] for n in conv_layers[(kernel, pass_)])
                  / (ms / 1e3) / 1e9 if ms > 0 else None}
                 for (kernel, pass_), ms in conv_ms.most_common()]
    return {
        "op_ms_per_step": total,
        "groups": [{"group": g, "ms_per_step": ms, "share": ms / total} for g, ms in by_group.most_common()],
        "ops": [{"op": k, "ms_per_step": ms, "share": ms / total} for k, ms in by_type.most_common()],
        "convolutions": conv_rows,
    }


def step_function(model: keras.Model, task: str, images: tf.Tensor,
                  labels: dict[str, tf.Tensor]) -> tuple[Callable[[], Any], keras.Model]:
    """The timed call for ``task`` and the model it runs (whose layers the convolutions are attributed to).

    The same set-up as the benchmark's ``keras training`` and ``keras inference, BN folded`` rows.
    """
    if task == "training":
        accelerate(compile_googlenet(model, keras.optimizers.Adam()))
        return lambda: model.train_on_batch(images, labels), model
    optimised = export_model(model)
    optimised.compile()
    accelerate(optimised)
    return lambda: optimised.predict_on_batch(images), optimised


def format_report(result: dict[str, Any]) -> str:
    """Markdown tables: groups, the top op types, the convolutions by kernel and pass."""
    lines = [f"{result['title']}: {result['step_ms']:.0f} ms per step (median wall time), "
             f"{result['op_ms_per_step']:.0f} ms of ops", "",
             "| group | ms per step | share |", "|---|---|---|"]
    lines += [f"| {row['group']} | {row['ms_per_step']:.1f} | {row['share']:.1%} |" for row in result["groups"]]
    lines += ["", "| op | ms per step | share |", "|---|---|---|"]
    lines += [f"| {row['op']} | {row['ms_per_step']:.1f} | {row['share']:.1%} |" for row in result["ops"][:15]]
    lines += ["", "| convolution | pass | ms per step | GFLOP/s |", "|---|---|---|---|"]
    lines += [f"| {row['kernel']} | {row['pass']} | {row['ms_per_step']:.1f} | {row['gflops_per_s'] or 0:.0f} |"
              for row in result["convolutions"]]
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    """The profiler's options."""
    parser = ArgumentParser(prog="python -m inception_keras.profile",
                            description="Profile GoogLeNet's training step or optimised inference op by op.")
    parser.add_argument("--task", default="training", choices=("training", "inference"), help="default training")
    parser.add_argument("--variant", default="bn", choices=tuple(VARIANTS), help="default bn")
    parser.add_argument("--image-size", type=int, default=224, help="default 224")
    parser.add_argument("--batch-size", type=int, default=32, help="default 32")
    parser.add_argument("--num-classes", type=int, default=1000, help="default 1000")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed"),
                        help="as the benchmark's: mixed is mixed_float16 on a GPU, mixed_bfloat16 on a CPU with "
                             "bfloat16 instructions; default float32")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps, averaged (default 3)")
    parser.add_argument("--inter-op-threads", type=int, default=1,
                        help="TensorFlow's inter-op threads; 1 (default) runs one op at a time so op times add up; "
                             "0: TensorFlow's default")
    parser.add_argument("--output", default="profile.json", help="JSON results file (default profile.json)")
    return parser


def parse_args(argv: Sequence[str] | None) -> Any:
    """Parse and validate the command line; raise :class:`UserError` before anything runs."""
    args = build_parser().parse_args(argv)
    checks = [
        (args.image_size >= MIN_INPUT_SIZE, f"--image-size must be at least {MIN_INPUT_SIZE}"),
        (args.batch_size >= 1 and args.steps >= 1 and args.warmup >= 0,
         "--batch-size and --steps must be at least 1, --warmup at least 0"),
        (args.num_classes >= 2, "--num-classes must be at least 2"),
        (args.inter_op_threads >= 0, "--inter-op-threads must be 0 or more"),
        (Path(args.output).suffix == ".json", f"--output must name a .json file, got {args.output}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    check_writable(Path(args.output).absolute().parent, "--output")
    if args.precision == "mixed":
        mixed_policy()  # a UserError on a machine without fast mixed precision
    return args


def set_inter_op_threads(threads: int) -> str:
    """Set TensorFlow's inter-op threads (0: leave them); say what the process runs with.

    TensorFlow fixes its thread pools when it runs its first op, so in a process that already ran
    TensorFlow (a notebook, a test) the setting cannot change any more: warn and keep the default.
    """
    if not threads:
        return "default"
    try:
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        warnings.warn(f"TensorFlow is already running in this process: inter-op threads stay at its default, not "
                      f"{threads}; run `python -m inception_keras.profile` in a fresh process for that", stacklevel=2)
        return "default (TensorFlow was already running)"
    return str(threads)


def main(argv: Sequence[str] | None = None) -> int:
    """Profile, print the tables and write the JSON. Returns the exit status."""
    args = parse_args(argv)
    threads = set_inter_op_threads(args.inter_op_threads)
    settings = Settings(variant=args.variant, image_size=args.image_size, batch_size=args.batch_size,
                        num_classes=args.num_classes, precision=args.precision)
    model = build_model(settings, (args.image_size, args.image_size, settings.channels), args.num_classes)
    images, labels = random_batch(settings, args.image_size)
    step, timed_model = step_function(model, args.task, images, labels)
    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    events = trace(step, args.steps)
    result = {"title": f"GoogLeNet {args.variant} {args.task}, {args.image_size} px, batch {args.batch_size}, "
                       f"{settings_policy(settings)}, "
                       f"inter-op threads {threads}",
              "settings": vars(args), "step_ms": statistics.median(seconds) * 1e3,
              **summarise(events, timed_model, args.steps, args.batch_size)}
    print(format_report(result))
    write_json(args.output, result)
    print(f"\nwritten {args.output}")
    return 0


def cli() -> None:
    """Console entry point (``inception-keras-profile``)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
