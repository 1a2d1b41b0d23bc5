"""Classes that ``.keras`` files written by earlier versions of this package name, so those files still load.

Earlier models were built from TensorFlow-tuned subclasses of Keras' layers and
optimizers; their speed-ups now live in :mod:`inception_keras.speedups` and the
model is built from stock layers.  These registered names load such a file as
the stock class it extends (a ``filter_gradient`` setting is accepted and
ignored).  Nothing in the package builds them.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="inception_keras")
class CpuConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` under the name earlier files use."""

    def __init__(self, *args: Any, filter_gradient: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="inception_keras")
class BiasConv2D(CpuConv2D):
    """``keras.layers.Conv2D`` under the oldest name earlier files use."""


@keras.saving.register_keras_serializable(package="inception_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` under the name earlier files use."""


@keras.saving.register_keras_serializable(package="inception_keras")
class SGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` under the name earlier training runs' files use."""


@keras.saving.register_keras_serializable(package="inception_keras")
class Adam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` under the name earlier training runs' files use."""


@keras.saving.register_keras_serializable(package="inception_keras")
class AdamW(keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` under the name earlier training runs' files use."""


LEGACY_LAYERS = {CpuConv2D: keras.layers.Conv2D, BiasConv2D: keras.layers.Conv2D,
                 FusedBatchNormalization: keras.layers.BatchNormalization}


def stock_class(layer_class: type) -> type:
    """The Keras class a legacy layer class stands for; any other class unchanged."""
    return LEGACY_LAYERS.get(layer_class, layer_class)
