"""Local Response Normalization with Caffe's semantics, as a serializable Keras layer in ``keras.ops``.

GoogLeNet normalises after ``pool1`` and after ``conv2`` with Caffe's LRN
(``local_size=5, alpha=1e-4, beta=0.75, k=1``)::

    b_c = a_c / (k + (alpha / n) * sum_{c' in the n channels centred on c} a_c'^2) ** beta

Caffe divides ``alpha`` by the window size ``n``; TensorFlow's
``tf.nn.local_response_normalization`` does not (passing ``alpha`` unchanged
there is a common bug of public ports), and ``keras.ops`` has no LRN, so the
window sum is written out: squares padded with ``n // 2`` zero channels on
each side, then ``n`` shifted slices added.  The layer computes in float32
whatever its input dtype, so it runs under ``mixed_bfloat16`` /
``mixed_float16``.  It is registered and has ``get_config``, so a ``.keras``
file containing it loads with ``safe_mode=True`` (after ``import inception_keras``).

On the TensorFlow backend :func:`inception_keras.speedups.accelerate` runs the
same formula XLA-compiled, with a written-out gradient.
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="inception_keras")
class LRN(keras.layers.Layer):
    """Cross-channel Local Response Normalization (Caffe ``ACROSS_CHANNELS`` mode) on channels-last maps.

    Args:
        size: window size ``n`` over channels; odd, centred on each channel.
        alpha: Caffe's scale (divided by ``size`` internally, as Caffe does).
        beta: exponent.
        k: additive bias.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be a positive odd integer, got {size!r}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        denominator = self.k + (self.alpha / self.size) * window_sum(ops.square(x), self.size)
        return ops.cast(x * ops.power(denominator, -self.beta), inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}


def window_sum(values, size: int):
    """Sum of ``values`` over each channel's window of ``size`` channels (last axis), zero-padded at the edges."""
    half, channels = size // 2, values.shape[-1]
    padded = ops.pad(values, [[0, 0]] * (len(values.shape) - 1) + [[half, half]])
    total = padded[..., :channels]
    for offset in range(1, size):
        total = total + padded[..., offset:offset + channels]
    return total
