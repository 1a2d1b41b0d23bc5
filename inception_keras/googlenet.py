"""GoogLeNet (Inception-V1) as a functional, multi-output Keras model.

``build_googlenet`` follows keras.applications' conventions and the paper's
Table 1: a stem (conv1, pool1, conv2, pool2), nine inception modules built in a
loop from :data:`INCEPTION_TABLE`, two auxiliary heads (after 4a and 4d) and the
main head (global average pool, dropout, FC, softmax).  The outputs are named
``main``, ``aux1``, ``aux2``, in that order.

Deviations from the paper / Caffe, for every variant:

* conv1 pads 3 on every side (as Caffe and torchvision do) with an explicit
  ``ZeroPadding2D``.  The stride-2 pools have Caffe's / torchvision's ceil-mode
  windows at every input size (:func:`~inception_keras.pooling.ceil_mode_max_pooling`:
  Keras' ``MaxPooling2D`` wherever a Keras padding gives them, as at 224 px).
* Any input of at least :data:`MIN_INPUT_SIZE` pixels per side works.  The aux
  heads use the paper's 5x5/3 average pool where it yields 4x4 (square inputs
  of 223..270 px) and an adaptive 4x4 average pool otherwise, so the head keeps
  its 2048 features (torchvision does the same).
* Weight initialisation is Keras' default (Glorot uniform, zero bias), not Caffe's
  xavier / constant 0.2 bias.
* The aux heads and every softmax run in float32 under mixed precision.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Any, Iterator

import keras
from keras import layers

from .blocks import InceptionSpec, aux_head, conv_unit, inception_module, keras_input
from .layers import LRN
from .pooling import ceil_mode_max_pooling
from .variants import Variant, get_variant

MIN_INPUT_SIZE = 32
"""Smallest input side: five stride-2 stages bring 32 px down to 1x1 at inception 5b."""

# Paper Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_TABLE: tuple[InceptionSpec, ...] = (
    InceptionSpec("3a", 64, 96, 128, 16, 32, 32),
    InceptionSpec("3b", 128, 128, 192, 32, 96, 64),
    InceptionSpec("4a", 192, 96, 208, 16, 48, 64),
    InceptionSpec("4b", 160, 112, 224, 24, 64, 64),
    InceptionSpec("4c", 128, 128, 256, 24, 64, 64),
    InceptionSpec("4d", 112, 144, 288, 32, 64, 64),
    InceptionSpec("4e", 256, 160, 320, 32, 128, 128),
    InceptionSpec("5a", 256, 160, 320, 32, 128, 128),
    InceptionSpec("5b", 384, 192, 384, 48, 128, 128),
)

# Max pool (named pool3 / pool4) inserted before these modules.
POOL_BEFORE = {"4a": "pool3", "5a": "pool4"}
# Auxiliary heads: head name -> module whose output it taps.
AUX_TAPS = {"aux1": "4a", "aux2": "4d"}
OUTPUT_NAMES = ("main", "aux1", "aux2")

# Endpoint name -> candidate layer names, first existing one wins (LRN and BN differ per variant).
ENDPOINT_LAYERS: dict[str, tuple[str, ...]] = {
    "conv1": ("conv1_7x7_s2_relu",),
    "pool1": ("pool1_norm1", "pool1_3x3_s2"),
    "conv2_reduce": ("conv2_3x3_reduce_relu",),
    "conv2": ("conv2_norm2", "conv2_3x3_relu"),
    "pool2": ("pool2_3x3_s2",),
    "inception_3a": ("inception_3a_output",),
    "inception_3b": ("inception_3b_output",),
    "pool3": ("pool3_3x3_s2",),
    "inception_4a": ("inception_4a_output",),
    "inception_4b": ("inception_4b_output",),
    "inception_4c": ("inception_4c_output",),
    "inception_4d": ("inception_4d_output",),
    "inception_4e": ("inception_4e_output",),
    "pool4": ("pool4_3x3_s2", "pool4_2x2_s2"),
    "inception_5a": ("inception_5a_output",),
    "inception_5b": ("inception_5b_output",),
}


def stem(x, variant: Variant):
    """conv1 7x7/2, pool1 3x3/2 (+LRN), conv2 1x1 reduce + 3x3 (+LRN), pool2 3x3/2."""
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = conv_unit(x, 64, 7, "conv1_7x7_s2", variant, strides=2, padding="valid")
    x = ceil_mode_max_pooling(x, 3, 2, "pool1_3x3_s2")
    if variant.lrn:
        x = LRN(name="pool1_norm1")(x)
    x = conv_unit(x, 64, 1, "conv2_3x3_reduce", variant)
    x = conv_unit(x, 192, 3, "conv2_3x3", variant)
    if variant.lrn:
        x = LRN(name="conv2_norm2")(x)
    return ceil_mode_max_pooling(x, 3, 2, "pool2_3x3_s2")


def _check_arguments(num_classes: int, input_shape: tuple, include_top: bool, pooling: str | None,
                     dropout: float | None, aux_dropout: float) -> None:
    """Raise a ValueError that says what to change for any invalid argument."""
    if include_top and (not _is_integer(num_classes) or num_classes < 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    height, width, channels = input_shape
    if channels is None or channels < 1:
        raise ValueError(f"input_shape needs a known, positive channel count, got {input_shape!r}")
    for side in (height, width):
        if side is not None and side < MIN_INPUT_SIZE:
            raise ValueError(f"input size {height}x{width} is too small: GoogLeNet needs at least "
                             f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels; resize your images")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    for label, rate, optional in (("dropout", dropout, True), ("aux_dropout", aux_dropout, False)):
        if rate is None and optional:
            continue
        if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
            raise ValueError(f"{label} must be a number in [0, 1){' or None' if optional else ''}, got {rate!r}")


def _is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer (Python's or NumPy's, as ``y.max() + 1`` gives), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def build_googlenet(
    num_classes: int = 1000,
    *,
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    variant: str = "paper",
    aux_heads: bool = True,
    include_top: bool = True,
    pooling: str | None = None,
    input_tensor: Any = None,
    dropout: float | None = None,
    aux_dropout: float = 0.7,
    classifier_activation: str | None = "softmax",
    name: str = "googlenet",
) -> keras.Model:
    """Build GoogLeNet as a functional Keras model.

    Args:
        num_classes: classes of every classifier head.
        input_shape: ``(height, width, channels)``; sides of at least
            :data:`MIN_INPUT_SIZE` (or ``None`` for any size), any channel count
            (1 for grayscale, 3 for RGB).
        variant: ``"paper"``, ``"bn"`` or ``"torchvision"`` (see ``variants.py``).
        aux_heads: add the two auxiliary classifiers (outputs ``aux1``, ``aux2``).
        include_top: with False, return features of inception 5b (no heads).
        pooling: with ``include_top=False``: None (the 4D map), ``"avg"`` or ``"max"``.
        input_tensor: optional Keras tensor to build on (keras.applications style).
        dropout: main head dropout; None uses the variant's (0.4 paper/bn, 0.2 torchvision).
        aux_dropout: dropout of the aux heads (0.7 in the paper).
        classifier_activation: activation of every head; None returns logits.
        name: model name.

    Returns:
        With ``include_top`` and ``aux_heads``: a model with outputs ``[main, aux1, aux2]``;
        with ``include_top`` only: the single output ``main``; else the feature model.
    """
    spec = get_variant(variant)
    if input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])  # the size the model will see is the tensor's
    input_shape = tuple(input_shape)
    _check_arguments(num_classes, input_shape, include_top, pooling, dropout, aux_dropout)
    num_classes = int(num_classes)
    model_input, x = keras_input(input_shape, input_tensor)

    x = stem(x, spec)
    aux_outputs = {}
    for block in INCEPTION_TABLE:
        if block.name in POOL_BEFORE:
            size = spec.pool4_size if block.name == "5a" else 3
            x = ceil_mode_max_pooling(x, size, 2, f"{POOL_BEFORE[block.name]}_{size}x{size}_s2")
        x = inception_module(x, block, spec)
        for head, tap in AUX_TAPS.items():
            if tap == block.name and include_top and aux_heads:
                with dtype_policy("float32"):  # also under mixed precision: 0.5% of the multiply-adds
                    aux_outputs[head] = aux_head(x, num_classes, head, spec, aux_dropout, classifier_activation)

    if not include_top:
        if pooling == "avg":
            x = layers.GlobalAveragePooling2D(name="pool5")(x)
        elif pooling == "max":
            x = layers.GlobalMaxPooling2D(name="pool5")(x)
        return keras.Model(model_input, x, name=name)

    x = layers.GlobalAveragePooling2D(name="pool5")(x)
    x = layers.Dropout(spec.dropout if dropout is None else dropout, name="pool5_drop")(x)
    x = layers.Dense(num_classes, name="classifier")(x)
    main = layers.Activation(classifier_activation, dtype="float32", name="main")(x)
    if not aux_heads:
        return keras.Model(model_input, main, name=name)
    return keras.Model(model_input, [main, aux_outputs["aux1"], aux_outputs["aux2"]], name=name)


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a Keras dtype policy (e.g. ``"mixed_bfloat16"``), restoring the previous global one.

    Keras' policy is process-wide; this scopes it to the model being built.  The
    heads' softmax layers and the aux heads stay float32 whatever the policy.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def endpoints(model: keras.Model, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Named stage outputs (``conv1`` ... ``inception_5b``) of a GoogLeNet, like TF-Slim's ``end_points``.

    Works on built and on loaded models.  Use with ``keras.Model(model.input,
    endpoints(model))`` for a multi-scale feature extractor.
    """
    wanted = names or tuple(ENDPOINT_LAYERS)
    layer_names = {layer.name for layer in model.layers}
    found = {}
    for endpoint in wanted:
        if endpoint not in ENDPOINT_LAYERS:
            raise ValueError(f"unknown endpoint {endpoint!r}; choose from {', '.join(ENDPOINT_LAYERS)}")
        layer = next((n for n in ENDPOINT_LAYERS[endpoint] if n in layer_names), None)
        if layer is None:
            raise ValueError(f"model {model.name!r} has no layer for endpoint {endpoint!r}: is it a GoogLeNet?")
        found[endpoint] = model.get_layer(layer).output
    return found


def feature_extractor(model: keras.Model, names: tuple[str, ...] | None = None) -> keras.Model:
    """A weight-sharing model whose output is the dict :func:`endpoints` returns."""
    return keras.Model(model.input, endpoints(model, names), name=f"{model.name}_endpoints")
