"""Opt-in TensorFlow fast paths for a GoogLeNet: the same model, weights and saved files, a faster step.

:func:`accelerate` gives a built (and possibly compiled) model's layers
TensorFlow-specific ``call`` methods, in place.  Nothing else changes: the
layers keep their classes, configs and variables, so ``model.save`` writes
stock Keras layers and the weights are shared with every model built on them
(``inference_model`` included).  The model's own source (``googlenet.py``,
``blocks.py``, ``layers.py``) never uses this module.  The speed-ups, by name:

* ``fused_batch_norm``: ``BatchNormalization`` through TensorFlow's fused kernel
  (``FusedBatchNormV3``: oneDNN on CPU, cuDNN on GPU), one op forward and one
  backward, keeping bfloat16 / float16 activations, where Keras runs separate
  moment and element-wise ops upcast to float32.
* ``conv_bias``: a convolution's bias added with a broadcast ``Add`` instead of
  ``BiasAdd``, whose gradient oneDNN's graph pass fuses into a slow
  filter-gradient-with-bias kernel on CPU (channels-last, no GPU visible).
* ``xla_lrn``: :class:`~inception_keras.layers.LRN` as two XLA-compiled
  functions (the forward pass and its written-out gradient), which fuse the
  memory-bound channel-window sum and the element-wise ops.
* ``compiled_updates``: the optimizer's update of all the variables as one
  XLA-compiled function (Keras' own update rule; not under a ``tf.distribute``
  strategy, where replica-context updates cannot be compiled).

``python -m inception_keras.train`` and the benchmark apply all four on the
TensorFlow backend; ``docs/performance.md`` has what each gains and the command
that measures it.  :func:`restore` takes them off again.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable

import keras
import tensorflow as tf

from .layers import LRN, window_sum

SPEEDUPS = ("fused_batch_norm", "conv_bias", "xla_lrn", "compiled_updates")
# Smallest epsilon TensorFlow's fused BatchNorm kernel accepts.
FUSED_MIN_EPSILON = 1.001e-5


def accelerate(model: keras.Model, speedups: Iterable[str] = SPEEDUPS) -> keras.Model:
    """Give ``model``'s layers (and its compiled optimizer) the named TensorFlow fast paths, in place.

    Call it after building (and compiling) and before the first ``fit`` /
    ``predict``; compiled step functions are reset so they trace the new
    calls.  Returns ``model``.  Raises a ValueError on another Keras backend or
    for an unknown speed-up name.
    """
    wanted = check_speedups(speedups)
    if keras.config.backend() != "tensorflow":
        raise ValueError(f"inception_keras.speedups are TensorFlow fast paths; the Keras backend is "
                         f"{keras.config.backend()!r} (set KERAS_BACKEND=tensorflow, or do without them)")
    patches = {"fused_batch_norm": (keras.layers.BatchNormalization, fused_batch_norm_call),
               "conv_bias": (keras.layers.Conv2D, broadcast_bias_conv_call),
               "xla_lrn": (LRN, xla_lrn_call)}
    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    for layer in model.layers:
        for name, (layer_type, call) in patches.items():
            if name in wanted and isinstance(layer, layer_type) and not (name == "conv_bias" and on_gpu):
                layer.call = functools.partial(call, layer)
    if "compiled_updates" in wanted and getattr(model, "optimizer", None) is not None:
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # LossScaleOptimizer
        optimizer.apply = functools.partial(compiled_apply, optimizer)
    model.train_function = model.test_function = model.predict_function = None
    return model


def restore(model: keras.Model) -> keras.Model:
    """Take :func:`accelerate`'s fast paths off ``model`` and its optimizer again; returns ``model``."""
    for layer in model.layers:
        layer.__dict__.pop("call", None)
    if getattr(model, "optimizer", None) is not None:
        getattr(model.optimizer, "inner_optimizer", model.optimizer).__dict__.pop("apply", None)
    model.train_function = model.test_function = model.predict_function = None
    return model


def applied(model: keras.Model) -> dict[str, int]:
    """How many layers (or optimizers) of ``model`` run each speed-up, for logs and tests."""
    counts = dict.fromkeys(SPEEDUPS, 0)
    calls = {fused_batch_norm_call: "fused_batch_norm", broadcast_bias_conv_call: "conv_bias",
             xla_lrn_call: "xla_lrn"}
    for layer in model.layers:
        call = layer.__dict__.get("call")
        if isinstance(call, functools.partial) and call.func in calls:
            counts[calls[call.func]] += 1
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and "apply" in getattr(optimizer, "inner_optimizer", optimizer).__dict__:
        counts["compiled_updates"] = 1
    return counts


def check_speedups(speedups: Iterable[str]) -> tuple[str, ...]:
    """``speedups`` as a tuple, or a ValueError naming the unknown ones and the valid names."""
    names = (speedups,) if isinstance(speedups, str) else tuple(speedups)
    unknown = [name for name in names if name not in SPEEDUPS]
    if unknown:
        raise ValueError(f"unknown speed-up {', '.join(map(repr, unknown))}; choose from {', '.join(SPEEDUPS)}")
    return names


# --- BatchNormalization through the fused kernel ---

def fused_batch_norm_call(layer: keras.layers.BatchNormalization, inputs, training=None, mask=None):
    """``layer``'s call through ``FusedBatchNormV3``: same outputs, same moving-statistics update as Keras'.

    Anything the kernel does not cover (a mask, renorm, synchronized BN,
    another axis or rank, an epsilon below the kernel's minimum) runs Keras' own call.
    """
    if (mask is not None or layer.renorm or layer.synchronized or len(inputs.shape) != 4
            or layer.axis not in (-1, 3) or layer.epsilon < FUSED_MIN_EPSILON):
        return type(layer).call(layer, inputs, training=training, mask=mask)
    channels = int(inputs.shape[-1])
    scale = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones([channels])
    offset = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros([channels])
    if training and layer.trainable:
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=layer.epsilon, data_format="NHWC", is_training=True)
        count = tf.cast(tf.size(inputs) // channels, tf.float32)
        variance = variance * (count - 1.0) / count  # the kernel returns the unbiased variance; Keras uses biased
        layer.moving_mean.assign(layer.moving_mean * layer.momentum + mean * (1.0 - layer.momentum))
        layer.moving_variance.assign(layer.moving_variance * layer.momentum + variance * (1.0 - layer.momentum))
        return outputs
    outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
        inputs, scale, offset, mean=tf.cast(layer.moving_mean, tf.float32),
        variance=tf.cast(layer.moving_variance, tf.float32), epsilon=layer.epsilon, data_format="NHWC",
        is_training=False)
    return outputs


# --- convolution bias outside oneDNN's fused filter gradient ---

def broadcast_bias_conv_call(layer: keras.layers.Conv2D, inputs):
    """``layer``'s call with the bias added by a broadcast ``Add``, whose gradient is a plain ``Sum``.

    TensorFlow's graph optimiser still fuses conv + ``Add`` + ReLU in the
    forward pass, as it fuses conv + ``BiasAdd`` + ReLU.
    """
    if not layer.use_bias or layer.data_format != "channels_last":
        return type(layer).call(layer, inputs)
    outputs = tf.add(layer.convolution_op(inputs, layer.kernel), tf.cast(layer.bias, inputs.dtype))
    return layer.activation(outputs) if layer.activation is not None else outputs


# --- LRN compiled with XLA ---

def xla_lrn_call(layer: LRN, inputs):
    """``layer``'s call as XLA-compiled forward and backward passes (:func:`lrn_forward`, :func:`lrn_backward`)."""
    size, scale, beta, k = layer.size, layer.alpha / layer.size, layer.beta, layer.k

    @tf.autograph.experimental.do_not_convert  # autograph would mangle the (output, gradient) pair
    @tf.custom_gradient
    def normalize(x):
        x32 = tf.cast(x, tf.float32)
        y32, denominator = lrn_forward(x32, size, scale, beta, k)

        def gradient(upstream):
            return tf.cast(lrn_backward(tf.cast(upstream, tf.float32), x32, y32, denominator, size, scale, beta),
                           x.dtype)

        return tf.cast(y32, x.dtype), gradient

    return normalize(inputs)


@tf.function(jit_compile=True)
def lrn_forward(x, size: int, scale: float, beta: float, k: float):
    """``y = x / d ** beta`` with ``d = k + scale * window_sum(x ** 2)``; returns ``(y, d)`` (``d`` for the gradient)."""
    denominator = k + scale * window_sum(tf.square(x), size)
    return x * inverse_power(denominator, beta), denominator


@tf.function(jit_compile=True)
def lrn_backward(upstream, x, y, denominator, size: int, scale: float, beta: float):
    """Gradient of :func:`lrn_forward` with respect to ``x``.

    ``d/dx_c`` of ``y_i = x_i d_i^-beta`` is ``g_c d_c^-beta - 2 scale beta x_c sum_{i near c} g_i y_i / d_i``
    (the window is symmetric, so the same window sum serves).
    """
    return upstream * inverse_power(denominator, beta) - (2.0 * scale * beta) * x * window_sum(
        upstream * y / denominator, size)


def inverse_power(base, beta: float):
    """``base ** -beta``; Caffe's 0.75 as ``rsqrt(b) * rsqrt(sqrt(b))``, several times faster than ``pow`` on CPU."""
    if beta == 0.75:
        return tf.math.rsqrt(base) * tf.math.rsqrt(tf.sqrt(base))
    if beta == 0.5:
        return tf.math.rsqrt(base)
    return tf.pow(base, -beta)


# --- optimizer updates compiled with XLA ---

def compiled_apply(optimizer: keras.optimizers.Optimizer, grads: Any, trainable_variables: Any = None) -> Any:
    """``optimizer.apply`` as one XLA-compiled function inside a compiled training step, else Keras' own.

    The compiled function is kept in the optimizer's ``__dict__``, out of Keras'
    attribute tracking (it is not optimizer state), one per variable list.
    """
    keras_apply = type(optimizer).apply.__get__(optimizer)
    if trainable_variables is None or tf.distribute.has_strategy() or not tf.inside_function():
        return keras_apply(grads, trainable_variables)
    variables = list(trainable_variables)
    if not optimizer.built:
        optimizer.build(variables)
    key = tuple(id(variable) for variable in variables)
    if optimizer.__dict__.get("_compiled_for") != key:
        optimizer.__dict__["_compiled_apply"] = tf.function(lambda gradients: keras_apply(gradients, variables),
                                                            jit_compile=True)
        optimizer.__dict__["_compiled_for"] = key
    return optimizer.__dict__["_compiled_apply"](list(grads))
