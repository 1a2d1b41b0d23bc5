"""Multiply-adds of a Keras model, counted from its layers' shapes.

What is counted: one multiply-add (MAC) per weight use in the convolutions
(``Conv1D/2D/3D``, grouped convolutions, ``DepthwiseConv2D``,
``SeparableConv2D``) and the ``Dense`` layers, for one image on the path from
the input to the model's outputs.  Bias additions, BatchNorm, ReLU, pooling,
LRN, concatenation and softmax are not counted: they are a fraction of a
percent of GoogLeNet's work and are not matrix multiplies.  Counting the
inference model (``inference_model(model)``, the ``main`` head only) gives the
figure papers quote: 1.58 G multiply-adds for the paper layout at 224 px and
1000 classes, 1.50 G for the torchvision layout (3x3 "5x5" branch, 2x2 pool4).

One multiply-add is two floating-point operations; :func:`training_flops`
estimates a training step as three forward passes (the forward pass, and a
backward pass computing both input and weight gradients, each as costly as the
forward pass), the usual convention.
"""

from __future__ import annotations

import math

import keras

FLOPS_PER_MULTIPLY_ADD = 2
TRAINING_PASSES = 3  # forward + gradient w.r.t. inputs + gradient w.r.t. weights


def _static(shape: tuple, layer: keras.layers.Layer) -> tuple[int, ...]:
    """The shape without its batch dimension, every side known, or a ValueError saying what to do."""
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(f"layer {layer.name!r} has an unknown size {tuple(shape)}: count multiply-adds on a "
                         "model built with a fixed input_shape, e.g. (224, 224, 3)")
    return dims


def layer_multiply_adds(layer: keras.layers.Layer) -> int:
    """Multiply-adds of one call of ``layer`` on one image (0 for layers that are not convs or dense)."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        out = _static(layer.output.shape, layer)
        in_channels = _static(layer.input.shape, layer)[-1]
        depthwise = math.prod(out[:-1]) * in_channels * layer.depth_multiplier * math.prod(layer.kernel_size)
        pointwise = math.prod(out[:-1]) * in_channels * layer.depth_multiplier * out[-1]
        return depthwise + pointwise
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = _static(layer.output.shape, layer)
        return math.prod(out) * math.prod(layer.kernel_size)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) and not isinstance(
            layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
        out = _static(layer.output.shape, layer)
        in_channels = _static(layer.input.shape, layer)[-1]
        return math.prod(out) * math.prod(layer.kernel_size) * in_channels // layer.groups
    if isinstance(layer, keras.layers.Dense):
        inputs = _static(layer.input.shape, layer)
        return math.prod(inputs) * layer.units
    return 0


def per_layer_multiply_adds(model: keras.Model) -> dict[str, int]:
    """Multiply-adds per image of every counted layer of ``model``, by layer name, in graph order.

    Only the layers of ``model``'s own graph are visited, so a weight-sharing
    ``inference_model`` leaves out the aux heads.  Nested models are counted
    through their own layers.
    """
    counts: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            counts.update({f"{layer.name}/{k}": v for k, v in per_layer_multiply_adds(layer).items()})
            continue
        if isinstance(layer, keras.layers.Conv1DTranspose | keras.layers.Conv2DTranspose
                      | keras.layers.Conv3DTranspose):
            raise ValueError(f"layer {layer.name!r}: transposed convolutions are not counted by this module")
        macs = layer_multiply_adds(layer)
        if macs:
            counts[layer.name] = macs
    return counts


def count_multiply_adds(model: keras.Model) -> int:
    """Total conv + dense multiply-adds per image of ``model`` (see the module docstring)."""
    return sum(per_layer_multiply_adds(model).values())


def inference_flops(multiply_adds: int) -> int:
    """Floating-point operations of one forward pass with ``multiply_adds`` MACs."""
    return FLOPS_PER_MULTIPLY_ADD * multiply_adds


def training_flops(multiply_adds: int) -> int:
    """Estimated floating-point operations of one training step per image (3 passes of ``multiply_adds``)."""
    return TRAINING_PASSES * FLOPS_PER_MULTIPLY_ADD * multiply_adds
