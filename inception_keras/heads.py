"""Training and inference with GoogLeNet's three heads.

* :func:`compile_googlenet` weights the losses as the paper does
  (``main + 0.3 * aux1 + 0.3 * aux2``), addressing every loss, weight and metric
  by output name so no head can be mixed up with another, and puts accuracy and
  top-5 accuracy on ``main`` and accuracy on each aux head.
* :func:`inference_model` drops the aux heads: a single-output model sharing the
  weights, which evaluation and export use (the paper discards the aux heads at
  inference).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from .googlenet import OUTPUT_NAMES


@keras.saving.register_keras_serializable(package="inception_keras")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with optional label smoothing.

    Keras' own ``SparseCategoricalCrossentropy`` has no ``label_smoothing``; this
    one-hot encodes the labels and calls ``keras.losses.categorical_crossentropy``,
    which has.  With ``label_smoothing=0`` it equals the Keras loss.  A label
    outside ``[0, classes)`` (1-based labels, say) would one-hot encode to zeros
    and add no loss, so it raises an ``InvalidArgumentError`` instead, as Keras'
    loss does on CPU (under XLA the check compiles to nothing).
    """

    def __init__(self, label_smoothing: float = 0.0, from_logits: bool = False,
                 name: str = "sparse_categorical_crossentropy", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        classes = ops.shape(y_pred)[-1]
        message = "labels must be class indices in [0, number of classes): check the labels' range"
        with tf.control_dependencies([tf.debugging.assert_non_negative(labels, message=message),
                                      tf.debugging.assert_less(labels, classes, message=message)]):
            one_hot = ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, from_logits=self.from_logits,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


def head_names(model: keras.Model) -> tuple[str, ...]:
    """Names of the model's classifier outputs that are GoogLeNet heads, in output order."""
    names = tuple(model.output_names)
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown or "main" not in names:
        raise ValueError(f"expected outputs named among {OUTPUT_NAMES} including 'main', got {names}: "
                         "build the model with build_googlenet(include_top=True)")
    return names


def head_metrics(head: str, num_classes: int) -> list[keras.metrics.Metric]:
    """Accuracy on every head; top-5 accuracy too on ``main`` when there are more than 5 classes."""
    metrics: list[keras.metrics.Metric] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if head == "main" and num_classes > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    return metrics


def compile_googlenet(
    model: keras.Model,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    *,
    aux_weight: float = 0.3,
    label_smoothing: float = 0.0,
    from_logits: bool = False,
    jit_compile: bool | str = False,
    steps_per_execution: int = 1,
) -> keras.Model:
    """Compile a GoogLeNet with the paper's loss weighting and per-head metrics.

    Losses, loss weights and metrics are dicts keyed by output name, so the
    total loss is ``main + aux_weight * (aux1 + aux2)`` whatever the output
    order.  Keras logs the metrics as ``main_accuracy``, ``main_top5_accuracy``,
    ``aux1_accuracy``, ``aux2_accuracy`` and the losses as ``main_loss`` ...

    ``jit_compile`` defaults to False: XLA made the CPU training step about 2x
    slower on the 2-core CPUs this was measured on (README, Performance).

    Returns the same model, compiled and with every training variable created
    (see :func:`build_training_state`).
    """
    if aux_weight < 0:
        raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    heads = head_names(model)
    num_classes = int(model.get_layer("main").output.shape[-1])
    model.compile(
        optimizer=optimizer,
        loss={h: SparseCategoricalCrossentropy(label_smoothing, from_logits, name=f"{h}_loss") for h in heads},
        loss_weights={h: 1.0 if h == "main" else aux_weight for h in heads},
        metrics={h: head_metrics(h, num_classes) for h in heads},
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    build_training_state(model)
    return model


def build_training_state(model: keras.Model) -> None:
    """Create the metric, loss-tracker and optimizer variables of a compiled model now.

    Without a distribution strategy Keras creates them inside the first trace of
    the train step, and a ``tf.function`` that creates variables is traced twice:
    for GoogLeNet that second trace costs as long as the first (seen: 10-25 s of
    the first ``fit`` on a 2-core CPU).  Keras does this same symbolic build
    itself under a ``tf.distribute`` strategy; it has no public name, so this
    calls ``Model._symbolic_build`` (pinned Keras; tests/test_heads.py checks the
    single trace).  Call it inside the strategy scope the model was built in.
    """
    labels = {name: keras.KerasTensor((None,), "int32") for name in model.output_names}
    if len(labels) == 1:  # a single-head model trains on plain labels
        labels = labels["main"]
    model._symbolic_build(data_batch=(model.inputs[0], labels, None))


def inference_model(model: keras.Model, name: str | None = None) -> keras.Model:
    """A single-output model (``main``) that shares ``model``'s weights and drops the aux heads."""
    return keras.Model(model.input, model.get_layer("main").output, name=name or f"{model.name}_inference")
