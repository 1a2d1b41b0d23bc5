"""LRN against a NumPy implementation of Caffe's formula and TensorFlow's kernel (values and gradients),
its serialization, FusedBatchNormalization against keras.layers.BatchNormalization, and CpuConv2D (values,
gradients, which ops compute them) against keras.layers.Conv2D and TensorFlow's filter gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from inception_keras import layers as layers_module
from inception_keras.layers import LRN, CpuConv2D, FusedBatchNormalization, matmul_filter_gradient


def caffe_lrn(a: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """b_c = a_c / (k + alpha/n * sum over the n channels centred on c of a^2) ** beta, zero-padded at the edges."""
    channels = a.shape[-1]
    half = size // 2
    squares = np.pad(a.astype(np.float64) ** 2, [(0, 0)] * (a.ndim - 1) + [(half, half)])
    window = np.stack([squares[..., c:c + size].sum(-1) for c in range(channels)], axis=-1)
    return a / (k + alpha / size * window) ** beta


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_lrn_matches_caffe_formula(scale, training):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 5, 6, 16)) * scale).astype("float32")
    got = np.asarray(LRN()(x, training=training))
    want = caffe_lrn(x)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # at scale 30 the normalisation is strong enough that a wrong alpha (not divided by n) would show
    if scale > 1:
        assert np.abs(got - caffe_lrn(x, alpha=5e-4)).max() > 1e-3


def test_lrn_uses_its_own_parameters():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1, 3, 3, 8)) * 10).astype("float32")
    layer = LRN(size=3, alpha=2e-2, beta=0.5, k=2.0)
    np.testing.assert_allclose(np.asarray(layer(x)), caffe_lrn(x, 3, 2e-2, 0.5, 2.0), atol=1e-5, rtol=1e-5)


def test_lrn_config_round_trip():
    layer = LRN(size=7, alpha=3e-4, beta=0.5, k=2.0, name="norm")
    clone = LRN.from_config(layer.get_config())
    assert (clone.size, clone.alpha, clone.beta, clone.k, clone.name) == (7, 3e-4, 0.5, 2.0, "norm")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, LRN) and restored.size == 7


@pytest.mark.parametrize("size", [0, 4, -3, 2.5, 5.0, True])
def test_lrn_rejects_even_non_positive_or_non_integer_size(size):
    with pytest.raises(ValueError, match="positive odd"):
        LRN(size=size)


def lrn_reference(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """TensorFlow's own LRN kernel with Caffe's alpha / n."""
    return tf.nn.local_response_normalization(x, size // 2, k, alpha / size, beta)


def value_and_gradient(fn, x):
    weights = tf.sin(tf.range(x.shape[-1], dtype=tf.float32))  # a loss that weights every channel differently
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    return y, tape.gradient(loss, x)


@pytest.mark.parametrize("training", [True, False], ids=["custom-gradient", "inference-path"])
@pytest.mark.parametrize("beta, scale", [(0.75, 1.0), (0.75, 30.0), (0.5, 10.0), (0.6, 10.0)])
def test_lrn_gradient_matches_tensorflows_kernel(beta, scale, training):
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 5, 13)) * scale, tf.float32)
    layer = LRN(beta=beta, alpha=1e-3)
    y, grad = value_and_gradient(lambda t: layer(t, training=training), x)
    y_ref, grad_ref = value_and_gradient(lambda t: lrn_reference(t, beta=beta, alpha=1e-3), x)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), grad_ref.numpy(), rtol=1e-4, atol=1e-5)


def test_lrn_gradient_inside_a_compiled_function():
    x = tf.constant(np.random.default_rng(1).standard_normal((1, 4, 4, 8)) * 20, tf.float32)
    layer = LRN()
    compiled = tf.function(lambda t: value_and_gradient(lambda u: layer(u, training=True), t)[1])
    np.testing.assert_allclose(compiled(x).numpy(), value_and_gradient(lrn_reference, x)[1].numpy(), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_lrn_runs_in_bfloat16_on_cpu(training):
    x = tf.constant(np.random.default_rng(2).standard_normal((1, 4, 4, 8)) * 20, tf.float32)
    layer = LRN(dtype="mixed_bfloat16")
    y, grad = value_and_gradient(lambda t: layer(t, training=training), tf.cast(x, tf.bfloat16))
    assert y.dtype == tf.bfloat16 and grad.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), lrn_reference(x).numpy(), rtol=2e-2, atol=2e-2)


def twin_layers(momentum=0.9, **kwargs):
    """A Keras BatchNormalization and a FusedBatchNormalization with the same non-trivial weights."""
    rng = np.random.default_rng(3)
    plain = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-3, **kwargs)
    fused = FusedBatchNormalization(momentum=momentum, epsilon=1e-3, **kwargs)
    for layer in (plain, fused):
        layer.build((None, 6, 6, 5))
    weights = {"gamma": rng.uniform(0.5, 1.5, 5), "beta": rng.normal(0, 0.3, 5), "moving_mean": rng.normal(0, 0.5, 5),
               "moving_variance": rng.uniform(0.5, 2, 5)}
    weights = [weights[w.name] for w in plain.weights]
    plain.set_weights(weights)
    fused.set_weights(weights)
    return plain, fused


@pytest.mark.parametrize("training", [False, True])
def test_fused_batchnorm_equals_keras(training):
    plain, fused = twin_layers()
    x = tf.constant(np.random.default_rng(4).normal(1.0, 2.0, (8, 6, 6, 5)), tf.float32)
    np.testing.assert_allclose(fused(x, training=training).numpy(), plain(x, training=training).numpy(),
                               rtol=1e-4, atol=1e-4)
    for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):  # moving statistics updated alike
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_batchnorm_gradients_equal_keras():
    plain, fused = twin_layers()
    x = tf.constant(np.random.default_rng(5).normal(0.0, 1.5, (4, 6, 6, 5)), tf.float32)
    grads = []
    for layer in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) ** 3)
        grads.append(tape.gradient(loss, [x, *layer.trainable_weights]))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-3)


def test_fused_batchnorm_falls_back_and_serializes():
    plain, fused = twin_layers(center=False)
    x = tf.constant(np.random.default_rng(6).normal(size=(2, 6, 6, 5)), tf.float32)
    np.testing.assert_allclose(fused(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)
    rank2 = FusedBatchNormalization()
    assert rank2(tf.ones((3, 4)), training=True).shape == (3, 4)  # Keras path
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused))
    assert isinstance(restored, FusedBatchNormalization) and restored.center is False


def test_fused_batchnorm_keeps_bfloat16():
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    y = layer(tf.ones((2, 3, 3, 4)), training=True)
    assert y.dtype == tf.bfloat16


def twin_convs(kernel_size: int = 3, padding: str = "same", **kwargs):
    """A Keras Conv2D and a CpuConv2D with the same non-trivial kernel and bias."""
    filter_gradient = kwargs.pop("filter_gradient", "auto")
    plain = keras.layers.Conv2D(6, kernel_size, padding=padding, **kwargs)
    split = CpuConv2D(6, kernel_size, padding=padding, filter_gradient=filter_gradient, **kwargs)
    for layer in (plain, split):
        layer.build((None, 7, 7, 4))
    rng = np.random.default_rng(7)
    weights = [rng.normal(0, 0.3, w.shape) for w in plain.weights]
    plain.set_weights(weights)
    split.set_weights(weights)
    return plain, split


def outputs_and_gradients(layer, x):
    """``[y, d/dx, d/dkernel, (d/dbias)]`` of ``sum(layer(x) ** 2)``."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y ** 2)
    return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]


@pytest.mark.parametrize("kernel_size, padding, use_bias, filter_gradient", [
    (3, "same", True, "native"), (3, "same", True, "matmul"), (3, "same", False, "matmul"),
    (5, "same", True, "matmul"), (2, "same", False, "matmul"), (3, "valid", True, "matmul")])
def test_cpu_conv_equals_keras_conv_and_its_gradients(kernel_size, padding, use_bias, filter_gradient):
    plain, split = twin_convs(kernel_size, padding, activation="relu", use_bias=use_bias,
                              filter_gradient=filter_gradient)
    assert split.uses_matmul_filter_gradient == (filter_gradient == "matmul")
    x = tf.constant(np.random.default_rng(8).normal(size=(3, 7, 7, 4)), tf.float32)
    expected, got = outputs_and_gradients(plain, x), outputs_and_gradients(split, x)
    assert [w.name for w in split.weights] == (["kernel", "bias"] if use_bias else ["kernel"])
    assert len(got) == len(expected) == 3 + use_bias
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kernel_shape, padding", [((3, 3, 5, 7), "SAME"), ((4, 2, 3, 2), "SAME"),
                                                   ((3, 5, 2, 4), "VALID"), ((1, 1, 6, 3), "SAME")])
def test_matmul_filter_gradient_equals_tensorflows_on_unknown_sizes(kernel_shape, padding):
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 9, 11, kernel_shape[2])), tf.float32)
    out_shape = tf.nn.conv2d(x, tf.zeros(kernel_shape), 1, padding).shape
    upstream = tf.constant(rng.normal(size=out_shape), tf.float32)
    unknown = tf.TensorSpec([None, None, None, kernel_shape[2]], tf.float32)
    matmul = tf.function(lambda x, g: matmul_filter_gradient(x, g, kernel_shape, padding),
                         input_signature=[unknown, tf.TensorSpec([None, None, None, kernel_shape[3]], tf.float32)])
    expected = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=kernel_shape, out_backprop=upstream,
                                               strides=[1, 1, 1, 1], padding=padding)
    np.testing.assert_allclose(matmul(x, upstream).numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)


def gradient_ops(layer, x):
    """Op types of the traced graph computing ``layer``'s weight gradients."""
    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.trainable_weights)

    return {op.type for op in grads.get_concrete_function(x).graph.get_operations()}


def test_cpu_conv_bias_gradient_is_not_a_biasaddgrad():
    plain, split = twin_convs(filter_gradient="native")
    x = tf.zeros((2, 7, 7, 4))
    assert "BiasAddGrad" in gradient_ops(plain, x)  # the op oneDNN fuses into Conv2DBackpropFilterWithBias
    ops = gradient_ops(split, x)
    assert "BiasAddGrad" not in ops and "BiasAdd" not in ops and "Sum" in ops
    assert "Conv2DBackpropFilter" in ops


def test_matmul_filter_gradient_replaces_the_conv_kernel_gradient():
    _, split = twin_convs(filter_gradient="matmul")
    ops = gradient_ops(split, tf.zeros((2, 7, 7, 4)))
    assert "Conv2DBackpropFilter" not in ops and "MatMul" in ops


@pytest.mark.parametrize("fast_cpu_kernel", [True, False])
def test_auto_filter_gradient_uses_matmuls_only_for_stride_one_3x3_on_avx2(monkeypatch, fast_cpu_kernel):
    monkeypatch.setattr(layers_module, "avx2_without_avx512", lambda: not fast_cpu_kernel)
    chosen = {}
    for name, kwargs in {"3x3": {}, "3x3 valid": {"padding": "valid"}, "5x5": {"kernel_size": 5},
                         "1x1": {"kernel_size": 1}, "3x3/2": {"strides": 2}, "dilated": {"dilation_rate": 2}}.items():
        layer = CpuConv2D(**{"filters": 2, "kernel_size": 3, "padding": "same", **kwargs})
        layer.build((None, 9, 9, 2))
        chosen[name] = layer.uses_matmul_filter_gradient
    matmul = not fast_cpu_kernel and not tf.config.list_logical_devices("GPU")
    assert chosen == {"3x3": matmul, "3x3 valid": matmul, "5x5": False, "1x1": False, "3x3/2": False,
                      "dilated": False}


def test_forced_matmul_filter_gradient_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="stride 1"):
        CpuConv2D(2, 3, strides=2, filter_gradient="matmul").build((None, 9, 9, 2))
    with pytest.raises(ValueError, match="filter_gradient must be one of"):
        CpuConv2D(2, 3, filter_gradient="fast")


def test_cpu_conv_serializes_and_runs_without_bias_and_in_bfloat16():
    _, split = twin_convs(filter_gradient="matmul")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(split))
    assert type(restored) is CpuConv2D and restored.filters == 6 and restored.filter_gradient == "matmul"
    no_bias = CpuConv2D(2, 1, use_bias=False)
    assert no_bias(tf.ones((1, 3, 3, 2))).shape == (1, 3, 3, 2) and len(no_bias.weights) == 1
    mixed = CpuConv2D(2, 3, padding="same", dtype="mixed_bfloat16", filter_gradient="matmul")
    with tf.GradientTape() as tape:
        y = mixed(tf.ones((1, 3, 3, 2)))
        loss = tf.reduce_sum(tf.cast(y, tf.float32))
    assert y.dtype == tf.bfloat16
    gradient = tape.gradient(loss, mixed.kernel)
    assert gradient.dtype == tf.float32 and float(tf.reduce_sum(tf.abs(gradient))) > 0


def test_bias_conv_the_earlier_name_still_loads():
    """``.keras`` files saved before CpuConv2D name their convolutions ``inception_keras>BiasConv2D``."""
    config = {"module": None, "class_name": "BiasConv2D", "registered_name": "inception_keras>BiasConv2D",
              "config": {"name": "conv", "filters": 3, "kernel_size": [3, 3], "padding": "same", "use_bias": True}}
    layer = keras.saving.deserialize_keras_object(config)
    assert isinstance(layer, CpuConv2D) and layer.filter_gradient == "auto" and layer.filters == 3
