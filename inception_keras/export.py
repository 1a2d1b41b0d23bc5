"""Export the inference model: BatchNorm folding, SavedModel, TFLite (float32 / float16 / int8), checks.

* :func:`fold_batchnorm` rebuilds a functional model without its inference-time
  no-ops: every ``Conv2D -> BatchNormalization`` pair becomes one ``Conv2D`` with
  a bias (``w' = w * s``, ``b' = (b - mean) * s + beta`` with
  ``s = gamma / sqrt(var + eps)``) and ``Dropout`` layers are dropped.  The
  result has the same predictions (to float rounding) and fewer ops; TensorFlow
  then fuses conv + bias + ReLU into one kernel.
* :func:`export_model` prepares a model for export: the ``main`` head only (the
  aux heads are dropped, as in the paper) with BatchNorm folded.
* :func:`sub_batched` runs a model on slices of each batch at once, for
  inference processes with one intra-op thread per core.
* :func:`export_savedmodel` writes a TF SavedModel (``serve`` endpoint,
  ``tf.saved_model.load(path).serve(images)``) with ``keras.Model.export``.
* :func:`export_tflite` writes a TFLite flatbuffer converted from a concrete
  function of the model: ``float32``, ``float16`` (float16 weights),
  ``dynamic`` (int8 weights, activations quantized on the fly) or ``int8``
  (int8 weights and activations, calibrated on ``representative_data``; the
  input and output stay float32 so callers need no quantization parameters).
  A mixed-precision model is converted through :func:`float32_model`, its
  float32 copy: TFLite has no bfloat16 kernels.
* :func:`tflite_predict` runs a ``.tflite`` file on a batch of images;
  :func:`agreement` compares two sets of softmax outputs (top-1 agreement,
  max absolute probability difference).

Every file or directory is written under a temporary name and renamed into
place, so an interrupted export never leaves a half-written model; the command
line moves its exports into place only once all of them are written and checked.

Command line: writes ``OUT/savedmodel/``, ``OUT/model_<quantization>.tflite``
and ``OUT/export.json`` with, for every export, its agreement with the Keras
model and (on a real test split) its accuracy next to the Keras model's.  The
check images are the test split of the run's dataset (or ``--dataset``), else
uniform random images; int8 is calibrated on images of the training split::

    python -m inception_keras.export RUN_DIR_OR_MODEL [--format savedmodel tflite tflite-int8 ...]
        [--output-dir OUT] [--dataset NAME] [--data-dir DIR] [--check-images N]
        [--calibration-images N] [--no-fold]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from .errors import ArgumentParser, UserError, run_cli
from .heads import inference_model
from .legacy import stock_class
from .runs import atomic_path, check_writable, write_json

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
FORMATS = ("savedmodel", "tflite", "tflite-float16", "tflite-dynamic", "tflite-int8")
DEFAULT_CALIBRATION_IMAGES = 200
DEFAULT_CHECK_IMAGES = 500
INTERRUPTED = "nothing was written; run the same command again"  # after Ctrl-C (see main)


# --------------------------------------------------------------------------- BatchNorm folding


def _tensor_sources(value: Any) -> Iterator[str]:
    """Names of the layers whose outputs appear in a serialized call argument (any nesting)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            yield value["config"]["keras_history"][0]
            return
        for item in value.values():
            yield from _tensor_sources(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensor_sources(item)


def _consumers(model: keras.Model) -> dict[str, list[str]]:
    """Layer name -> names of the layers (and ``"<output>"``) that read its output in ``model``'s graph."""
    config = model.get_config()
    consumers: dict[str, list[str]] = defaultdict(list)
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            for source in _tensor_sources(node):
                consumers[source].append(layer["name"])
    outputs = config["output_layers"]
    for output in (outputs if isinstance(outputs[0], list) else [outputs]):
        consumers[output[0]].append("<output>")
    return consumers


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """``{conv name: batchnorm name}`` for every BatchNorm that can be folded into the conv before it.

    A pair folds when the BatchNorm normalises the last axis, the conv is a
    ``Conv2D`` without an activation, and the BatchNorm is the conv's only reader.
    """
    consumers = _consumers(model)
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        sources = [s for s, readers in consumers.items() if layer.name in readers]
        if len(sources) != 1:
            continue
        conv = model.get_layer(sources[0])
        if (stock_class(type(conv)) is keras.layers.Conv2D and conv.activation is keras.activations.linear
                and consumers[conv.name] == [layer.name] and layer.axis in (-1, [3], 3, [-1])):
            pairs[conv.name] = layer.name
    return pairs


def folded_conv_weights(conv: keras.layers.Conv2D, bn: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """``[kernel, bias]`` of the conv that computes ``bn(conv(x))`` at inference, in float64 then cast back."""
    kernel = np.asarray(conv.kernel, dtype=np.float64)
    bias = np.asarray(conv.bias, dtype=np.float64) if conv.use_bias else np.zeros(kernel.shape[-1])
    mean = np.asarray(bn.moving_mean, dtype=np.float64)
    variance = np.asarray(bn.moving_variance, dtype=np.float64)
    gamma = np.asarray(bn.gamma, dtype=np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta, dtype=np.float64) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    dtype = np.asarray(conv.kernel).dtype
    return [(kernel * scale).astype(dtype), ((bias - mean) * scale + beta).astype(dtype)]


def _same_input(model: keras.Model) -> Any:
    """A new input named like ``model``'s (``clone_model`` would name it after the tensor), or None."""
    inputs = model.get_config()["input_layers"]
    if isinstance(inputs[0], list):
        return None  # several inputs: let clone_model make them
    return keras.Input(batch_shape=model.input.shape, dtype=model.input.dtype, name=inputs[0])


def fold_batchnorm(model: keras.Model, name: str | None = None) -> keras.Model:
    """A functional copy of ``model`` for inference with BatchNorm folded into the convs and no Dropout.

    The copy has its own weights (the original is not changed), the same input
    and output names, and predicts what ``model(x, training=False)`` does.
    Layers that are not folded keep their configuration and weights;
    layers of the classes earlier versions saved (:mod:`~inception_keras.legacy`)
    become the Keras layers they stand for, so a
    folded BN model holds Keras layers only and loads without ``inception_keras``
    (unless its input sides are ``None`` or of different parity: then its
    pools are :class:`~inception_keras.pooling.CeilModeMaxPooling2D`).
    """
    pairs = foldable_pairs(model)
    skipped = set(pairs.values()) | {layer.name for layer in model.layers if isinstance(layer, keras.layers.Dropout)}

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config, layer_class = layer.get_config(), stock_class(layer.__class__)
        if layer.name in pairs:
            config.update(use_bias=True, bias_initializer="zeros")
        return layer_class.from_config(config)

    def call_layer(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        return args[0] if layer.name in skipped else layer(*args, **kwargs)

    def weights_for(layer: keras.layers.Layer, original: keras.layers.Layer) -> list[np.ndarray]:
        if layer.name in pairs:
            return folded_conv_weights(original, model.get_layer(pairs[layer.name]))
        return original.get_weights()

    return functional_copy(model, clone_layer, weights_for, call_layer, name=name or f"{model.name}_folded")


def functional_copy(model: keras.Model, clone_layer: Callable[[keras.layers.Layer], keras.layers.Layer],
                    weights_for: Callable[[keras.layers.Layer, keras.layers.Layer], list[np.ndarray]],
                    call_layer: Callable[..., Any] | None = None, name: str | None = None) -> keras.Model:
    """``model`` rebuilt layer by layer by ``clone_layer`` (called through ``call_layer``), input name kept.

    Each clone of a layer with weights gets ``weights_for(clone, original)``.
    """
    copy = keras.models.clone_model(model, input_tensors=_same_input(model), clone_function=clone_layer,
                                    call_function=call_layer)
    for layer in copy.layers:
        original = model.get_layer(layer.name)
        if original.weights:
            layer.set_weights(weights_for(layer, original))
    return keras.Model(copy.input, copy.output, name=name or model.name)


def export_model(model: keras.Model, fold: bool = True) -> keras.Model:
    """The model to export: the ``main`` head only (aux heads dropped), with BatchNorm folded unless ``fold=False``.

    The layers keep their dtype policy: a model built under ``mixed_bfloat16``
    gives a bfloat16 inference model (what the benchmark times and the SavedModel
    serves); :func:`tflite_flatbuffer` makes its own float32 copy.
    """
    if len(model.outputs) > 1:
        model = inference_model(model)
    return fold_batchnorm(model) if fold else model


def _is_float32(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` computes and keeps its variables in float32."""
    policy = layer.dtype_policy
    return policy.compute_dtype == "float32" and policy.variable_dtype == "float32"


def float32_model(model: keras.Model) -> keras.Model:
    """``model`` itself when every layer computes in float32, else a float32 copy of it.

    The copy has the same architecture, layer names and input / output names,
    every layer under the ``float32`` dtype policy, and the original's weights
    cast to float32 (exact: bfloat16 and float16 values are float32 values; a
    mixed policy keeps float32 variables anyway).  Its predictions differ from
    the original's only by the original's bfloat16 / float16 rounding.
    """
    if all(_is_float32(layer) for layer in model.layers):
        return model
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ValueError(f"cannot make a float32 copy of {model.name!r}: nested models {nested}")

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    def weights_for(layer: keras.layers.Layer, original: keras.layers.Layer) -> list[np.ndarray]:
        return [np.asarray(value).astype(variable.dtype)
                for variable, value in zip(layer.weights, original.get_weights(), strict=True)]

    return functional_copy(model, clone_layer, weights_for)


def sub_batched(model: keras.Model, parts: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """A compiled function: ``model`` on ``parts`` slices of the batch (at most one per image), outputs in order.

    The slices are independent ops, so TensorFlow's inter-op pool runs them at
    the same time.  With one intra-op thread and ``parts`` = cores inter-op
    threads (process-wide, set before TensorFlow runs its first op)::

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(2)
        infer = sub_batched(export_model(model), 2)

    each core computes a whole slice without waiting on the other: 1.09-1.12x
    the default threading on 2 cores (see ``inception_keras.benchmark
    --sub-batches``).  Under the default threading it gains little, and
    training in such a process is slower: keep it to inference processes.
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")

    @tf.function
    def infer(images: tf.Tensor) -> tf.Tensor:
        static = images.shape[0]  # traced per batch size; an empty slice would fail in oneDNN's kernels
        count = parts if static is None else max(1, min(parts, static))
        batch = tf.shape(images)[0] if static is None else static
        bounds = [batch * i // count for i in range(count + 1)]
        return tf.concat([model(images[start:stop], training=False)
                          for start, stop in zip(bounds[:-1], bounds[1:])], axis=0)

    return infer


# --------------------------------------------------------------------------- writing


def _replace_directory(source: Path, target: Path) -> None:
    """Move the finished directory ``source`` to ``target``, replacing an old ``target``."""
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        os.replace(target, old / target.name)
        os.replace(source, target)
        shutil.rmtree(old)
    else:
        os.replace(source, target)


def export_savedmodel(model: keras.Model, path: str | os.PathLike) -> Path:
    """Write ``model`` as a TF SavedModel directory with a ``serve`` endpoint; return the path.

    Export the inference model (:func:`export_model`): a multi-output model would
    serve all three heads.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.export(str(staging / "savedmodel"), format="tf_saved_model", verbose=False)
        _replace_directory(staging / "savedmodel", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def savedmodel_predict(path: str | os.PathLike, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Outputs of a SavedModel written by :func:`export_savedmodel` on ``images``, batch by batch."""
    served = tf.saved_model.load(str(path))
    batches = [np.asarray(served.serve(tf.constant(images[i:i + batch_size], tf.float32)))
               for i in range(0, len(images), batch_size)]
    return np.concatenate(batches)


def _calibration_images(data: np.ndarray | tf.data.Dataset | Iterable, limit: int) -> Iterator[np.ndarray]:
    """Single float32 images from an array or from batches (``images`` or ``(images, labels)``), at most ``limit``."""
    if isinstance(data, np.ndarray):
        data = [data]
    count = 0
    for batch in data:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        for image in np.asarray(images, dtype=np.float32):
            if count >= limit:
                return
            count += 1
            yield image[np.newaxis]


def tflite_flatbuffer(model: keras.Model, quantization: str = "float32",
                      representative_data: np.ndarray | tf.data.Dataset | Iterable | None = None,
                      calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> bytes:
    """``model`` converted to a TFLite flatbuffer (batch dimension left dynamic) with ``quantization``.

    The converter reads a SavedModel written by ``model.export`` to a temporary
    directory: converting a concrete function of a Keras 3 model directly keeps
    variable reads that the int8 calibrator cannot run.

    A model built under a mixed-precision policy (``mixed_bfloat16`` /
    ``mixed_float16``) is converted as its float32 copy (:func:`float32_model`),
    for every ``quantization``: TFLite's builtin kernels have no bfloat16 ones,
    and its ``float16`` / ``dynamic`` / ``int8`` quantizations start from a
    float32 model.  The copy is
    made here, not in :func:`export_model`, so the Keras inference model and the
    SavedModel keep computing in the policy's dtype.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "int8" and representative_data is None:
        raise ValueError("int8 quantization needs representative_data: a few hundred training images")
    model = float32_model(model)
    with tempfile.TemporaryDirectory(prefix="inception_keras_tflite.") as workdir:
        model.export(workdir, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(workdir)
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = lambda: ([image] for image in
                                                        _calibration_images(representative_data, calibration_images))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def export_tflite(model: keras.Model, path: str | os.PathLike, quantization: str = "float32",
                  representative_data: np.ndarray | tf.data.Dataset | Iterable | None = None,
                  calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> Path:
    """Convert ``model`` to TFLite and write it to ``path``; return the path.

    Args:
        model: the model to convert, usually :func:`export_model`'s result; a
            mixed-precision one is converted as its float32 copy (see
            :func:`tflite_flatbuffer`).
        path: the ``.tflite`` file to write (atomically).
        quantization: ``"float32"``, ``"float16"`` (float16 weights), ``"dynamic"``
            (int8 weights, dynamic-range activations) or ``"int8"`` (int8 weights
            and activations; float32 input and output).
        representative_data: for ``"int8"``: images as the model receives them, an
            array ``(N, H, W, C)`` or batches (a tf.data.Dataset of images or of
            ``(images, labels)``); the first ``calibration_images`` are used.
    """
    flatbuffer = tflite_flatbuffer(model, quantization, representative_data, calibration_images)
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
    return Path(path)


def tflite_interpreter(path: str | os.PathLike, num_threads: int | None = None) -> Any:
    """A TFLite interpreter for ``path`` (the LiteRT package's when installed, else TensorFlow's)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():  # TF 2.21 warns that tf.lite.Interpreter moves to ai_edge_litert
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count())


class TFLiteRunner:
    """A TFLite model prepared for batches of one fixed size: call it on up to ``batch_size`` images.

    A model exported with ``None`` input sides is resized to the images' size whenever that changes.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int = 32, num_threads: int | None = None):
        self.interpreter = tflite_interpreter(path, num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.batch_size = batch_size
        self._resize(self.input["shape"][1:])

    def _resize(self, image_shape: Sequence[int]) -> None:
        """Allocate the interpreter for batches of ``batch_size`` images of ``image_shape``."""
        self.interpreter.resize_tensor_input(self.input["index"], [self.batch_size, *image_shape])
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Outputs (dequantized to float32) for ``images``; a short batch is padded, then trimmed."""
        variable_sides = -1 in self.input["shape_signature"][1:3]
        if variable_sides and tuple(self.input["shape"][1:]) != tuple(images.shape[1:]):
            self._resize(images.shape[1:])
        count = len(images)
        batch = np.zeros(self.input["shape"], np.float32)
        batch[:count] = images
        self.interpreter.set_tensor(self.input["index"], _quantize(batch, self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)[:count]


def _quantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """``values`` in the tensor's type (only integer inputs need the scale and zero point)."""
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(detail["dtype"])
    return values.astype(detail["dtype"])


def _dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A tensor's values as float32."""
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return values.astype(np.float32)


def tflite_predict(path: str | os.PathLike, images: np.ndarray, batch_size: int = 32,
                   num_threads: int | None = None) -> np.ndarray:
    """Outputs of the TFLite model at ``path`` for ``images`` ``(N, H, W, C)``, float32 ``(N, classes)``."""
    runner = TFLiteRunner(path, min(batch_size, max(len(images), 1)), num_threads)
    return np.concatenate([runner(images[i:i + runner.batch_size]) for i in range(0, len(images), runner.batch_size)])


def keras_predict(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The ``main`` output of ``model`` for ``images`` as float32."""
    if len(model.outputs) > 1:
        model = inference_model(model)
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float32)


def agreement(reference: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """How far ``predictions`` are from ``reference`` (both softmax outputs ``(N, classes)``).

    Returns ``top1_agreement`` (fraction of images with the same arg-max) and
    ``max_abs_diff`` (largest absolute probability difference), with ``images``.
    """
    reference, predictions = np.asarray(reference, np.float64), np.asarray(predictions, np.float64)
    if reference.shape != predictions.shape:
        raise ValueError(f"prediction shapes differ: {reference.shape} vs {predictions.shape}")
    return {
        "images": int(len(reference)),
        "top1_agreement": float(np.mean(reference.argmax(-1) == predictions.argmax(-1))),
        "max_abs_diff": float(np.max(np.abs(reference - predictions))) if reference.size else 0.0,
    }


# --------------------------------------------------------------------------- command line


def build_parser() -> ArgumentParser:
    """The export command's options."""
    parser = ArgumentParser(
        prog="python -m inception_keras.export",
        description="Export a trained GoogLeNet's inference model (aux heads dropped, BatchNorm folded) as a "
                    "SavedModel and/or TFLite, and check that the exports predict what the Keras model does.")
    parser.add_argument("model", help="a run directory of inception_keras.train or a .keras model file")
    parser.add_argument("--format", nargs="+", default=["savedmodel", "tflite"], choices=FORMATS,
                        help="what to write (default: savedmodel tflite); tflite-int8 needs --dataset or a run")
    parser.add_argument("--output-dir", help="where to write (default: RUN_DIR/export, or MODEL_export/ "
                                             "beside a model file)")
    parser.add_argument("--dataset", help="images for the agreement check and int8 calibration "
                                          "(default: the run's dataset; random images when there is none)")
    parser.add_argument("--data-dir", help="where --dataset lives")
    parser.add_argument("--check-images", type=int, default=DEFAULT_CHECK_IMAGES,
                        help=f"test images to compare predictions on (default {DEFAULT_CHECK_IMAGES}; 0: the "
                             "whole test split)")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        help=f"training images to calibrate int8 on (default {DEFAULT_CALIBRATION_IMAGES})")
    parser.add_argument("--no-fold", action="store_true", help="keep BatchNorm layers (for comparison)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing exports in the output dir")
    return parser


def _collect(dataset: tf.data.Dataset, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` images (all when None) and their labels from batches of ``(images, labels)``."""
    images, labels, count = [], [], 0
    for batch_images, batch_labels in dataset:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
        count += len(images[-1])
        if limit is not None and count >= limit:
            break
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


@dataclass
class CheckData:
    """Images to compare predictions on (with labels when real), calibration images, and their source."""

    images: np.ndarray
    labels: np.ndarray | None
    calibration: np.ndarray | None
    source: str


def check_data(args: Any, model: keras.Model, run_config: dict[str, Any]) -> CheckData:
    """The CLI's check and calibration images: the run's (or ``--dataset``'s) test / train split, else random.

    A dataset whose classes (count or, for a run, names) or channels are not the model's is refused with
    evaluate's own checks: its accuracy would mean nothing.
    """
    from .evaluate import check_class_names, check_compatible, load_bundle

    if args.dataset is None and not run_config.get("data"):
        if "tflite-int8" in args.format:
            raise UserError("tflite-int8 needs real images to calibrate on: pass --dataset (and --data-dir)")
        shape = (args.check_images or DEFAULT_CHECK_IMAGES, *model.input.shape[1:])
        images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
        return CheckData(images, None, None, "uniform random images")
    bundle = load_bundle(run_config, model, args.dataset, args.data_dir)
    check_compatible(model, bundle)
    check_class_names(run_config, bundle)
    images, labels = _collect(bundle.eval_dataset("test"), args.check_images or None)
    calibration = None
    if "tflite-int8" in args.format:
        calibration, _ = _collect(bundle.eval_dataset("train").shuffle(64, seed=0), args.calibration_images)
    return CheckData(images, labels, calibration, f"{bundle.config.dataset} test split")


def accuracy(probabilities: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy, or None without labels."""
    return None if labels is None else float(np.mean(probabilities.argmax(-1) == labels))


def output_paths(output_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    """Where each format is written inside ``output_dir``."""
    names = {"savedmodel": "savedmodel", "tflite": "model_float32.tflite"}
    return {f: output_dir / names.get(f, f"model_{f.removeprefix('tflite-')}.tflite") for f in formats}


def default_output_dir(given: Path, model_path: Path, run_dir: Path | None) -> Path:
    """``RUN_DIR/export`` for a run directory, ``<model>_export/`` beside a model file."""
    return run_dir / "export" if run_dir and given.is_dir() else model_path.with_name(f"{model_path.stem}_export")


def export_and_check(exported: keras.Model, fmt: str, path: Path, data: CheckData, reference: np.ndarray,
                     calibration_images: int) -> dict[str, Any]:
    """Write ``exported`` in format ``fmt`` at ``path``; return its agreement with ``reference`` and accuracy."""
    if fmt == "savedmodel":
        export_savedmodel(exported, path)
        predictions = savedmodel_predict(path, data.images)
    else:
        quantization = fmt.removeprefix("tflite-") if fmt != "tflite" else "float32"
        export_tflite(exported, path, quantization, data.calibration, calibration_images)
        predictions = tflite_predict(path, data.images)
    return {**agreement(reference, predictions), "accuracy": accuracy(predictions, data.labels)}


@contextlib.contextmanager
def staging_directory(output_dir: Path) -> Iterator[Path]:
    """A hidden directory inside ``output_dir`` for one invocation's exports, removed when the block ends.

    If the block fails (or is interrupted), the directories this created on the way to ``output_dir`` are
    removed too when they are empty, so a failed export leaves the file system as it found it.
    """
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=".export."))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        created = output_dir
        while created != existing:
            with contextlib.suppress(OSError):  # not empty: something else is in there
                created.rmdir()
            created = created.parent
        raise
    shutil.rmtree(staging, ignore_errors=True)


def move_into_place(staged: dict[str, Path], paths: dict[str, Path]) -> None:
    """Rename every finished export from its staging path to its final path, replacing an older one."""
    for fmt, path in paths.items():
        if staged[fmt].is_dir():
            _replace_directory(staged[fmt], path)
        else:
            os.replace(staged[fmt], path)


def main(argv: Sequence[str] | None = None) -> int:
    """Export and check; print one line per format. Returns the exit status.

    Every format is written and checked in a staging directory inside the output directory and moved into
    place only when all of them are done, then ``export.json`` is written: an export that fails or is
    interrupted leaves nothing behind (an older export replaced with ``--overwrite`` stays as it was), so
    running the same command again starts cleanly.
    """
    from .evaluate import load_model, locate_model, read_run_config

    args = build_parser().parse_args(argv)
    if args.check_images < 0 or args.calibration_images < 1:
        raise UserError("--check-images must be >= 0 and --calibration-images >= 1")
    model_path, run_dir = locate_model(args.model)
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(Path(args.model), model_path, run_dir)
    check_writable(output_dir, "--output-dir")
    paths = output_paths(output_dir, dict.fromkeys(args.format))
    existing = [str(p) for p in [*paths.values(), output_dir / "export.json"] if p.exists()]
    if existing and not args.overwrite:
        raise UserError(f"{', '.join(existing)} already exist: pass --overwrite or another --output-dir")
    model = load_model(model_path)
    data = check_data(args, model, read_run_config(run_dir))

    exported = export_model(model, fold=not args.no_fold)
    reference = keras_predict(model, data.images)
    results: dict[str, Any] = {"model": str(model_path), "folded_batchnorm": not args.no_fold,
                               "check_images": data.source, "keras_accuracy": accuracy(reference, data.labels),
                               "formats": {}}
    with staging_directory(output_dir) as staging:
        staged = {fmt: staging / path.name for fmt, path in paths.items()}
        for fmt, path in paths.items():
            row = export_and_check(exported, fmt, staged[fmt], data, reference, args.calibration_images)
            results["formats"][fmt] = {"path": str(path), **row}
        move_into_place(staged, paths)
        write_json(output_dir / "export.json", results)
    for fmt, row in results["formats"].items():
        scored = "" if row["accuracy"] is None else (
            f"  accuracy {row['accuracy']:.4f} (Keras {results['keras_accuracy']:.4f})")
        print(f"{fmt:15s} {row['path']}  top-1 agreement {row['top1_agreement']:.4f}  "
              f"max |dp| {row['max_abs_diff']:.2e}{scored}  ({row['images']} images: {data.source})")
    return 0


def cli() -> None:
    """Console entry point: user errors become one ``error:`` line (exit 2), Ctrl-C says nothing was written."""
    sys.exit(run_cli(main, interrupted=INTERRUPTED))


if __name__ == "__main__":
    cli()
