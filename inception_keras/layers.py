"""Local Response Normalization with Caffe's semantics, as a serializable Keras layer.

GoogLeNet normalises after ``pool1`` and after ``conv2`` with Caffe's LRN
(``local_size=5, alpha=1e-4, beta=0.75, k=1``)::

    b_c = a_c / (k + (alpha / n) * sum_{c' in the n channels centred on c} a_c'^2) ** beta

Caffe divides ``alpha`` by the window size ``n``; TensorFlow's
``tf.nn.local_response_normalization`` does not, so this layer passes
``alpha / size`` (passing ``alpha`` unchanged there is the common bug, see
REFERENCE.md section 6).  The layer is registered and has ``get_config``, so a
``.keras`` file containing it loads with ``safe_mode=True``.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="inception_keras")
class LRN(keras.layers.Layer):
    """Cross-channel Local Response Normalization (Caffe ``ACROSS_CHANNELS`` mode).

    Args:
        size: window size ``n`` over channels; odd, centred on each channel.
        alpha: Caffe's scale (divided by ``size`` internally, as Caffe does).
        beta: exponent.
        k: additive bias.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be a positive odd number, got {size}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        # TensorFlow has no CPU LRN kernel for bfloat16: compute in float32 under mixed_bfloat16.
        x = tf.cast(inputs, tf.float32) if inputs.dtype == tf.bfloat16 else inputs
        normalized = tf.nn.local_response_normalization(
            x,
            depth_radius=self.size // 2,
            bias=self.k,
            alpha=self.alpha / self.size,
            beta=self.beta,
        )
        return tf.cast(normalized, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}
