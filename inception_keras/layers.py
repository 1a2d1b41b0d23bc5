"""Local Response Normalization with Caffe's semantics, as a serializable Keras layer.

GoogLeNet normalises after ``pool1`` and after ``conv2`` with Caffe's LRN
(``local_size=5, alpha=1e-4, beta=0.75, k=1``)::

    b_c = a_c / (k + (alpha / n) * sum_{c' in the n channels centred on c} a_c'^2) ** beta

Caffe divides ``alpha`` by the window size ``n``; TensorFlow's
``tf.nn.local_response_normalization`` does not, so this layer passes
``alpha / size`` (passing ``alpha`` unchanged there is a common bug of public
ports).  The layer is registered and has ``get_config``, so a
``.keras`` file containing it loads with ``safe_mode=True``.

Speed: TensorFlow's LRN / LRNGrad kernels are slow on CPU and have no
bfloat16 CPU kernel, so the layer writes out the forward pass and its gradient
(custom gradient) and compiles each with XLA (``jit_compile=True`` on just these
two functions, the rest of the model is not compiled).  LRN is memory-bound;
XLA fuses the channel-window sum and the element-wise ops into a few passes.
Forward + backward of the 56x56x192 LRN at batch 32 on 2 CPU cores: 52 ms,
against 109 ms for a band-matrix matmul, 157 ms for unfused slices and more
for TensorFlow's kernel.  Outside training (``training`` false or unset, as
in ``predict``) the layer runs :func:`lrn_inference`, the forward pass without
writing out the denominator that the gradient needs: 38 instead of 48 ms for
that LRN (Intel Xeon with AVX-512, 2 cores); the ``paper`` variant's folded
inference model, 224 px, batch 32, both ways interleaved in one process, runs
1.01-1.04x faster in float32 (two runs) and 1.1x in bfloat16 (258 against 233
images/s).  The layer computes in float32 whatever its input dtype, so it runs
under ``mixed_bfloat16`` / ``mixed_float16``.

:class:`FusedBatchNormalization` is ``keras.layers.BatchNormalization`` running
TensorFlow's fused kernel (one op forward, one backward), see its docstring.
:class:`CpuConv2D` is ``keras.layers.Conv2D`` whose bias gradient is not fused
into oneDNN's slow filter-gradient-with-bias kernel and whose 3x3 filter
gradient is computed with matmuls on AVX2 CPUs, see its docstring.
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
import tensorflow as tf

from .cpu import avx2_without_avx512


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
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be a positive odd integer, got {size!r}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        size, scale, beta, k = self.size, self.alpha / self.size, self.beta, self.k
        if not training:
            return lrn_inference(inputs, size, scale, beta, k)

        @tf.autograph.experimental.do_not_convert  # autograph would mangle the (output, gradient) pair
        @tf.custom_gradient
        def normalize(x: tf.Tensor):
            x32 = tf.cast(x, tf.float32)
            y32, denominator = lrn_forward(x32, size, scale, beta, k)

            def gradient(upstream: tf.Tensor) -> tf.Tensor:
                return tf.cast(lrn_backward(tf.cast(upstream, tf.float32), x32, y32, denominator, size, scale, beta),
                               x.dtype)

            return tf.cast(y32, x.dtype), gradient

        return normalize(inputs)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}


@tf.function(jit_compile=True)
def lrn_forward(x: tf.Tensor, size: int, scale: float, beta: float, k: float) -> tuple[tf.Tensor, tf.Tensor]:
    """``y = x / d ** beta`` with ``d = k + scale * window_sum(x ** 2)``; returns ``(y, d)`` (``d`` for the gradient).

    Compiled with XLA, which fuses the window sum and the element-wise ops into
    a couple of passes over the (memory-bound) feature map.
    """
    denominator = lrn_denominator(x, size, scale, k)
    return x * inverse_power(denominator, beta), denominator


@tf.function(jit_compile=True)
def lrn_inference(x: tf.Tensor, size: int, scale: float, beta: float, k: float) -> tf.Tensor:
    """:func:`lrn_forward`'s ``y`` alone, computed in float32 and returned in ``x``'s dtype.

    Not writing the denominator out saves a pass over the feature map, and the
    casts of a bfloat16 / float16 ``x`` fuse into the same compiled loop.
    TensorFlow can still differentiate it (through the compiled ops' own
    gradients), so a gradient taken in inference mode is right, only slower.
    """
    x32 = tf.cast(x, tf.float32)
    return tf.cast(x32 * inverse_power(lrn_denominator(x32, size, scale, k), beta), x.dtype)


@tf.function(jit_compile=True)
def lrn_backward(upstream: tf.Tensor, x: tf.Tensor, y: tf.Tensor, denominator: tf.Tensor, size: int, scale: float,
                 beta: float) -> tf.Tensor:
    """Gradient of :func:`lrn_forward` with respect to ``x``.

    ``d/dx_c`` of ``y_i = x_i d_i^-beta`` is ``g_c d_c^-beta - 2 scale beta x_c sum_{i near c} g_i y_i / d_i``
    (the window is symmetric, so the same window sum serves).
    """
    return upstream * inverse_power(denominator, beta) - (2.0 * scale * beta) * x * window_sum(
        upstream * y / denominator, size)


def lrn_denominator(x: tf.Tensor, size: int, scale: float, k: float) -> tf.Tensor:
    """``k + scale * window_sum(x ** 2)``, the base that LRN raises to ``-beta``."""
    return k + scale * window_sum(tf.square(x), size)


def window_sum(values: tf.Tensor, size: int) -> tf.Tensor:
    """Sum of ``values`` over each channel's window of ``size`` channels, zero-padded at the edges."""
    half, channels = size // 2, values.shape[-1]
    padded = tf.pad(values, [[0, 0]] * (len(values.shape) - 1) + [[half, half]])
    total = padded[..., :channels]
    for offset in range(1, size):
        total += padded[..., offset:offset + channels]
    return total


def inverse_power(base: tf.Tensor, beta: float) -> tf.Tensor:
    """``base ** -beta``; Caffe's 0.75 as ``rsqrt(b) * rsqrt(sqrt(b))``, several times faster than ``pow`` on CPU."""
    if beta == 0.75:
        return tf.math.rsqrt(base) * tf.math.rsqrt(tf.sqrt(base))
    if beta == 0.5:
        return tf.math.rsqrt(base)
    return tf.pow(base, -beta)


@keras.saving.register_keras_serializable(package="inception_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` on NHWC feature maps through TensorFlow's fused kernel.

    Keras 3 normalises with separate moment and element-wise ops, upcast to
    float32 even under mixed precision; ``tf.nn``'s fused kernel
    (FusedBatchNormV3: oneDNN on CPU, cuDNN on GPU) does the forward and the
    backward pass in one op each and keeps bfloat16 / float16 activations.  On
    2 CPU cores (224 px, batch 32) the BN variant's training step gets 1.2x faster.

    Same weights, config and moving-statistics update (biased batch variance,
    ``momentum``) as the Keras layer, so checkpoints load into either class.
    Anything else (a mask, renorm, synchronized BN, another axis or rank, an
    epsilon below the kernel's 1.001e-5) uses the Keras implementation.
    """

    def _fusable(self, inputs: tf.Tensor, mask: Any) -> bool:
        return (mask is None and not self.renorm and not self.synchronized and len(inputs.shape) == 4
                and self.axis in (-1, 3) and self.epsilon >= 1.001e-5)

    def call(self, inputs: tf.Tensor, training: bool | None = None, mask: Any = None) -> tf.Tensor:
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = int(inputs.shape[-1])
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            count = tf.cast(tf.size(inputs) // channels, tf.float32)
            variance = variance * (count - 1.0) / count  # the kernel returns the unbiased variance; Keras uses biased
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
            return outputs
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
            is_training=False)
        return outputs


FILTER_GRADIENTS = ("auto", "native", "matmul")


@keras.saving.register_keras_serializable(package="inception_keras")
class CpuConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (same config and weights) with two changes that make CPU training faster.

    **Bias.** Keras adds a conv bias with ``BiasAdd``, whose gradient
    ``BiasAddGrad`` TensorFlow's oneDNN pass fuses with the filter gradient
    into ``Conv2DBackpropFilterWithBias``, a slow kernel: in the paper variant's
    training step (224 px, batch 32, 2 CPU cores; kernel times summed over
    the step by the TF profiler) it takes 690 ms against 520 ms for the plain
    filter gradient plus 30 ms for the bias gradient (a ``Sum``), which is what
    a broadcast ``Add`` differentiates to: the step gets about 1.05-1.08x
    faster.  So on CPU the bias is added with a broadcast ``Add``.  The forward
    pass is unchanged: TensorFlow's graph optimiser fuses conv + bias-like
    ``Add`` + ReLU exactly as it fuses conv + ``BiasAdd`` + ReLU.

    **Filter gradient** (``filter_gradient``).  On AVX2 CPUs without AVX-512,
    oneDNN's filter gradient of a 3x3 convolution (a ``jit:avx2`` direct
    kernel) runs at 60-95 GFLOP/s where a float32 matmul reaches 170 (AMD EPYC
    Zen 3, 2 cores, batch 32).  With ``"matmul"`` the gradient is instead
    :func:`matmul_filter_gradient`: one matmul per kernel offset over the
    shifted input.  Measured there, the BN variant's training step at 224 px,
    batch 32, both models interleaved in one process for 14-16 steps, at two
    levels of host load: 9.3 and 12.4 images/s with oneDNN's kernel, 10.2 and
    12.9 with matmuls for the 3x3 convolutions (9.9-10.0 against 10.2 with the
    5x5 and 1x1 ones too, so those keep oneDNN's); at 32 px, batch 64 (the
    default run), 266 and 277 images/s over 30 steps.  The input gradient and the
    forward pass stay TensorFlow's.  ``"auto"`` (the default) picks
    ``"matmul"`` for stride-1 3x3 convolutions on such CPUs with no GPU
    visible, ``"native"`` elsewhere (cuDNN's and oneDNN's AVX-512 kernels were
    not measured against it); ``"native"`` always keeps TensorFlow's gradient.

    Both choices are made when the layer is built (the visible devices are
    fixed once TensorFlow has started; ``uses_matmul_filter_gradient`` tells
    the outcome) and are not saved: a model loaded on another machine decides
    again.  The bias change is channels-last only, the matmul gradient also
    needs stride 1, no dilation and one group; elsewhere the layer is Keras'.
    """

    def __init__(self, *args: Any, filter_gradient: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if filter_gradient not in FILTER_GRADIENTS:
            raise ValueError(f"filter_gradient must be one of {FILTER_GRADIENTS}, got {filter_gradient!r}")
        self.filter_gradient = filter_gradient
        self.uses_matmul_filter_gradient = False  # resolved by build()

    def build(self, input_shape: tuple) -> None:
        super().build(input_shape)
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        self._broadcast_bias = self.use_bias and self.data_format == "channels_last" and not on_gpu
        self.uses_matmul_filter_gradient = self._resolve_filter_gradient(on_gpu)

    def _resolve_filter_gradient(self, on_gpu: bool) -> bool:
        """Whether ``filter_gradient`` means matmuls for this layer's geometry on this machine."""
        supported = (self.data_format == "channels_last" and self.groups == 1 and self.strides == (1, 1)
                     and self.dilation_rate == (1, 1) and self.padding in ("same", "valid"))
        if self.filter_gradient == "matmul":
            if not supported:
                raise ValueError(f"{self.name}: filter_gradient='matmul' needs a channels-last convolution "
                                 "with stride 1, no dilation, one group and 'same' or 'valid' padding")
            return True
        return (self.filter_gradient == "auto" and supported and self.kernel_size == (3, 3) and not on_gpu
                and avx2_without_avx512())

    def convolution_op(self, inputs: tf.Tensor, kernel: Any) -> tf.Tensor:
        if not self.uses_matmul_filter_gradient:
            return super().convolution_op(inputs, kernel)
        return conv2d_with_matmul_filter_gradient(inputs, tf.convert_to_tensor(kernel), self.padding.upper())

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        if not self._broadcast_bias:
            return super().call(inputs)
        outputs = self.convolution_op(inputs, self.kernel)
        outputs = tf.add(outputs, tf.cast(self.bias, outputs.dtype))
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filter_gradient": self.filter_gradient}


def conv2d_with_matmul_filter_gradient(x: tf.Tensor, kernel: tf.Tensor, padding: str) -> tf.Tensor:
    """Stride-1 ``tf.nn.conv2d(x, kernel)`` whose kernel gradient is :func:`matmul_filter_gradient`.

    The forward pass and the input gradient are TensorFlow's own ops, as in
    TensorFlow's registered Conv2D gradient.
    """
    @tf.autograph.experimental.do_not_convert  # autograph would mangle the (output, gradient) pair
    @tf.custom_gradient
    def convolve(x: tf.Tensor, kernel: tf.Tensor):
        def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            input_gradient = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=upstream, strides=[1, 1, 1, 1], padding=padding)
            return input_gradient, matmul_filter_gradient(x, upstream, kernel.shape, padding)

        return tf.nn.conv2d(x, kernel, strides=1, padding=padding), gradient

    return convolve(x, kernel)


def matmul_filter_gradient(x: tf.Tensor, upstream: tf.Tensor, kernel_shape: Any, padding: str) -> tf.Tensor:
    """Gradient of a stride-1 NHWC convolution with respect to its ``(kh, kw, in, out)`` kernel, by matmuls.

    ``dW[i, j] = sum_{n,h,w} x_padded[n, h + i, w + j, :]^T upstream[n, h, w, :]``:
    for each kernel offset ``(i, j)`` the shifted input window, flattened to
    ``(pixels, in)``, times the flattened upstream gradient ``(pixels, out)``.
    ``"SAME"`` pads as TensorFlow does (the extra row / column of an even
    kernel at the end).
    """
    rows, columns, in_channels, out_channels = (int(d) for d in kernel_shape)
    if padding == "SAME":
        x = tf.pad(x, [[0, 0], [(rows - 1) // 2, rows // 2], [(columns - 1) // 2, columns // 2], [0, 0]])
    out_height, out_width = tf.shape(upstream)[1], tf.shape(upstream)[2]
    flat_upstream = tf.reshape(upstream, [-1, out_channels])
    offsets = [tf.matmul(tf.reshape(x[:, i:i + out_height, j:j + out_width, :], [-1, in_channels]), flat_upstream,
                         transpose_a=True)
               for i in range(rows) for j in range(columns)]
    return tf.reshape(tf.stack(offsets), [rows, columns, in_channels, out_channels])


@keras.saving.register_keras_serializable(package="inception_keras")
class BiasConv2D(CpuConv2D):
    """:class:`CpuConv2D` under its earlier name, kept so ``.keras`` files saved by earlier versions load."""
