"""GoogLeNet's pooling with Caffe's / PyTorch's output sizes, at any input size.

* :func:`ceil_mode_max_pooling` is Caffe's (and ``torch.nn.MaxPool2d(...,
  ceil_mode=True)``'s) unpadded max pooling, whose windows start at the top-left
  corner and may run past the bottom / right edge: ``ceil((n - k) / s) + 1``
  outputs per side.  Keras' ``padding="same"`` gives the same windows for the
  3x3/2 pools only on even sides (on odd ones it pads both edges: one output
  more, windows shifted by a pixel) and ``"valid"`` only on odd sides, so the
  builder picks whichever Keras padding matches the map's static size, and
  :class:`CeilModeMaxPooling2D` where none does (sides of different parity,
  or unknown until run time).  At 224 px every pooled map is even: plain
  ``MaxPooling2D(padding="same")``, as before.
* :class:`AdaptiveAveragePooling2D` is ``keras.layers.AdaptiveAveragePooling2D``
  (PyTorch's bins: output ``i`` averages input rows ``floor(i n / o)`` to
  ``ceil((i + 1) n / o) - 1``), which needs static spatial sizes, extended to
  sizes known only at run time, so the aux heads work in variable-size models.
"""

from __future__ import annotations

from typing import Any

import keras
import ml_dtypes
from keras import layers, ops


def ceil_mode_size(side: int, pool: int, stride: int) -> int:
    """Output side of Caffe's / PyTorch's ``ceil_mode`` pooling with no padding (``side >= pool``)."""
    return -(-(side - pool) // stride) + 1


def keras_padding_for(side: int, pool: int, stride: int) -> set[str]:
    """The Keras paddings (``"valid"``, ``"same"``) whose windows on a ``side``-pixel axis are ceil mode's."""
    size = ceil_mode_size(side, pool, stride)
    fits = set()
    if (side - pool) % stride == 0:  # then ceil mode's last window ends exactly at the edge
        fits.add("valid")
    same_size = -(-side // stride)
    same_before = max((same_size - 1) * stride + pool - side, 0) // 2
    if same_size == size and same_before == 0:  # "same" pads nothing before the first window
        fits.add("same")
    return fits


def ceil_mode_max_pooling(x, pool: int, stride: int, name: str):
    """Max-pool ``x`` (NHWC) the way Caffe and torchvision pool GoogLeNet, as a layer named ``name``.

    A ``keras.layers.MaxPooling2D`` where a Keras padding gives ceil mode's
    windows on both sides (so the model holds Keras layers only), else a
    :class:`CeilModeMaxPooling2D`.
    """
    height, width = x.shape[1], x.shape[2]
    if height is not None and width is not None:
        fits = keras_padding_for(height, pool, stride) & keras_padding_for(width, pool, stride)
        for padding in ("same", "valid"):  # "same" first: what the model used before at 224 px
            if padding in fits:
                return layers.MaxPooling2D(pool, strides=stride, padding=padding, name=name)(x)
    return CeilModeMaxPooling2D(pool, strides=stride, name=name)(x)


@keras.saving.register_keras_serializable(package="inception_keras")
class CeilModeMaxPooling2D(keras.layers.MaxPooling2D):
    """``MaxPooling2D`` with Caffe's / PyTorch's ``ceil_mode=True`` windows and no padding (NHWC).

    The map is padded at the bottom and right by ``stride - 1`` rows and
    columns of the dtype's lowest value (so the padding never wins a max),
    then pooled with ``padding="valid"``: ``floor((n + s - 1 - k) / s) + 1`` is
    ceil mode's ``ceil((n - k) / s) + 1`` windows at the same offsets, whose last
    one ends at most ``s - 1`` past the edge.  A constant padding keeps the
    static shape (TFLite needs the channel count), so this also works on sizes
    known only at run time.
    """

    def __init__(self, pool_size: Any = 2, strides: Any = None, **kwargs: Any):
        kwargs.pop("padding", None)  # always ceil mode; get_config records "valid"
        super().__init__(pool_size, strides, padding="valid", **kwargs)
        if self.data_format != "channels_last":
            raise ValueError(f"CeilModeMaxPooling2D works on channels-last maps, got data_format={self.data_format!r}")

    def call(self, inputs):
        rows, columns = (stride - 1 for stride in self.strides)
        lowest = ml_dtypes.finfo(keras.backend.standardize_dtype(inputs.dtype)).min
        padded = ops.pad(inputs, [[0, 0], [0, rows], [0, columns], [0, 0]], constant_values=lowest)
        return super().call(padded)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        batch, height, width, channels = input_shape
        sides = [None if side is None else ceil_mode_size(side, pool, stride)
                 for side, pool, stride in zip((height, width), self.pool_size, self.strides)]
        return (batch, *sides, channels)


@keras.saving.register_keras_serializable(package="inception_keras")
class AdaptiveAveragePooling2D(keras.layers.AdaptiveAveragePooling2D):
    """``keras.layers.AdaptiveAveragePooling2D`` that also pools NHWC maps whose size is known only at run time.

    With static sizes it is Keras' layer.  Otherwise each axis is averaged
    by a matmul with its ``(output, input)`` matrix of bin weights
    ``1 / bin size``, PyTorch's bins (which Keras' layer uses too).
    """

    def call(self, inputs):
        if self.data_format != "channels_last" or None not in inputs.shape[1:3]:
            return super().call(inputs)
        height, width = ops.shape(inputs)[1:3]
        rows = bin_weights(height, self.output_size[0], inputs.dtype)
        columns = bin_weights(width, self.output_size[1], inputs.dtype)
        return ops.einsum("nhwc,ih,jw->nijc", inputs, rows, columns)


def bin_weights(side, bins: int, dtype: str):
    """The ``(bins, side)`` matrix that averages each of PyTorch's adaptive pooling bins of a ``side``-long axis."""
    index = ops.arange(bins, dtype="int32")
    start = (index * side) // bins
    end = -((-(index + 1) * side) // bins)
    position = ops.expand_dims(ops.arange(side, dtype="int32"), 0)
    inside = ops.logical_and(position >= ops.expand_dims(start, 1), position < ops.expand_dims(end, 1))
    return ops.cast(inside, dtype) / ops.expand_dims(ops.cast(end - start, dtype), 1)
