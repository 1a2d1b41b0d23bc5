"""The building blocks of GoogLeNet: conv unit, inception module, auxiliary head.

Each function takes a Keras tensor and returns one, naming every layer after the
paper / Caffe vocabulary (``inception_4a_3x3_reduce``, ``aux1_fc`` ...), so the
layer names are stable and weights can be ported or inspected by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from .pooling import AdaptiveAveragePooling2D
from .variants import Variant

# Side of the aux heads' pooled map: the paper's 5x5/3 pool turns 4a/4d's 14x14 into 4x4.
AUX_POOLED_SIDE = 4


@dataclass(frozen=True)
class InceptionSpec:
    """Filter counts of one inception module (paper Table 1)."""

    name: str
    branch_1x1: int
    reduce_3x3: int
    branch_3x3: int
    reduce_5x5: int
    branch_5x5: int
    pool_proj: int

    @property
    def output_channels(self) -> int:
        """Channels of the concatenated output."""
        return self.branch_1x1 + self.branch_3x3 + self.branch_5x5 + self.pool_proj


def conv_unit(x, filters: int, kernel_size: int, name: str, variant: Variant, strides: int = 1,
              padding: str = "same"):
    """Convolution + (BatchNorm) + ReLU; the unit's output layer is always ``<name>_relu``.

    With BatchNorm the convolution has no bias (the BN offset replaces it).
    The ReLU is a separate layer for every variant so the unit ends in the
    same name; TensorFlow's graph optimiser fuses conv + bias + ReLU anyway.
    """
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=not variant.batch_norm,
                      name=name)(x)
    if variant.batch_norm:
        x = layers.BatchNormalization(epsilon=variant.bn_epsilon, momentum=variant.bn_momentum,
                                      name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def inception_module(x, spec: InceptionSpec, variant: Variant):
    """The inception module: 1x1, 1x1->3x3, 1x1->5x5 and 3x3 max-pool->1x1 branches, concatenated.

    The "5x5" branch uses ``variant.wide_kernel`` (5, or 3 for the torchvision layout).
    """
    prefix = f"inception_{spec.name}"
    b1 = conv_unit(x, spec.branch_1x1, 1, f"{prefix}_1x1", variant)
    b3 = conv_unit(x, spec.reduce_3x3, 1, f"{prefix}_3x3_reduce", variant)
    b3 = conv_unit(b3, spec.branch_3x3, 3, f"{prefix}_3x3", variant)
    b5 = conv_unit(x, spec.reduce_5x5, 1, f"{prefix}_5x5_reduce", variant)
    b5 = conv_unit(b5, spec.branch_5x5, variant.wide_kernel, f"{prefix}_5x5", variant)
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{prefix}_pool")(x)
    bp = conv_unit(bp, spec.pool_proj, 1, f"{prefix}_pool_proj", variant)
    return layers.Concatenate(name=f"{prefix}_output")([b1, b3, b5, bp])


def aux_pooling(x, name: str, variant: Variant):
    """Pool an aux head's input to 4x4.

    The paper's 5x5/3 valid average pool only yields 4x4 for maps of 14..16 px
    (inputs near 224).  For any other (or unknown) size an adaptive 4x4 average
    pool keeps the head at 2048 features, as torchvision does; the torchvision
    variant always pools adaptively.
    """
    height, width = x.shape[1], x.shape[2]
    paper_fits = all(side is not None and (side - 5) // 3 + 1 == AUX_POOLED_SIDE for side in (height, width))
    if variant.aux_pool == "paper" and paper_fits:
        return layers.AveragePooling2D(5, strides=3, padding="valid", name=f"{name}_pool")(x)
    if None in (height, width):
        return AdaptiveAveragePooling2D(AUX_POOLED_SIDE, name=f"{name}_pool")(x)
    return layers.AdaptiveAveragePooling2D(AUX_POOLED_SIDE, name=f"{name}_pool")(x)


def aux_head(x, num_classes: int, name: str, variant: Variant, dropout: float,
             classifier_activation: str | None):
    """Auxiliary classifier: 4x4 pool, 1x1 conv 128, FC 1024 + ReLU, dropout, FC num_classes.

    The final activation layer is named ``name`` (``aux1`` / ``aux2``), which
    makes it the model output's name; it runs in float32 under mixed precision
    (``build_googlenet`` builds the whole head under a float32 policy).
    """
    x = aux_pooling(x, name, variant)
    x = conv_unit(x, 128, 1, f"{name}_conv", variant)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    x = layers.Dense(num_classes, name=f"{name}_classifier")(x)
    return layers.Activation(classifier_activation, dtype="float32", name=name)(x)


def keras_input(input_shape: tuple[int | None, int | None, int], input_tensor=None):
    """Return ``(model_input, image_tensor)`` the way keras.applications treats ``input_tensor``."""
    if input_tensor is None:
        image = keras.Input(shape=input_shape, name="image")
        return image, image
    if not keras.backend.is_keras_tensor(input_tensor):
        image = keras.Input(tensor=input_tensor, shape=input_shape, name="image")
        return image, image
    return keras.utils.get_source_inputs(input_tensor), input_tensor
