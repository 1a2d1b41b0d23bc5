"""LRN against a NumPy implementation of Caffe's formula and TensorFlow's kernel (values and gradients),
its validation and serialization, and its mixed-precision behaviour."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from inception_keras.layers import LRN, window_sum


def caffe_lrn(a: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """b_c = a_c / (k + alpha/n * sum over the n channels centred on c of a^2) ** beta, zero-padded at the edges."""
    channels = a.shape[-1]
    half = size // 2
    squares = np.pad(a.astype(np.float64) ** 2, [(0, 0)] * (a.ndim - 1) + [(half, half)])
    window = np.stack([squares[..., c:c + size].sum(-1) for c in range(channels)], axis=-1)
    return a / (k + alpha / size * window) ** beta


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_lrn_matches_caffe_formula(scale):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 5, 6, 16)) * scale).astype("float32")
    got = np.asarray(LRN()(x))
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


@pytest.mark.parametrize("beta, scale", [(0.75, 1.0), (0.75, 30.0), (0.5, 10.0), (0.6, 10.0)])
def test_lrn_gradient_matches_tensorflows_kernel(beta, scale):
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 5, 13)) * scale, tf.float32)
    layer = LRN(beta=beta, alpha=1e-3)
    y, grad = value_and_gradient(layer, x)
    y_ref, grad_ref = value_and_gradient(lambda t: lrn_reference(t, beta=beta, alpha=1e-3), x)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), grad_ref.numpy(), rtol=1e-4, atol=1e-5)


def test_lrn_gradient_inside_a_compiled_function():
    x = tf.constant(np.random.default_rng(1).standard_normal((1, 4, 4, 8)) * 20, tf.float32)
    layer = LRN()
    compiled = tf.function(lambda t: value_and_gradient(layer, t)[1])
    np.testing.assert_allclose(compiled(x).numpy(), value_and_gradient(lrn_reference, x)[1].numpy(), rtol=1e-4,
                               atol=1e-5)


def test_lrn_runs_in_bfloat16_on_cpu():
    x = tf.constant(np.random.default_rng(2).standard_normal((1, 4, 4, 8)) * 20, tf.float32)
    layer = LRN(dtype="mixed_bfloat16")
    y, grad = value_and_gradient(layer, tf.cast(x, tf.bfloat16))
    assert y.dtype == tf.bfloat16 and grad.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), lrn_reference(x).numpy(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("size", [1, 3, 5, 9])
def test_window_sum_equals_a_convolution_over_channels(size):
    values = np.random.default_rng(9).standard_normal((2, 3, 3, 7)).astype("float32")
    padded = np.pad(values, [(0, 0)] * 3 + [(size // 2, size // 2)])
    expected = np.stack([padded[..., c:c + size].sum(-1) for c in range(7)], axis=-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(window_sum(values, size)), expected, rtol=1e-6, atol=1e-6)


def test_lrn_needs_no_training_argument_and_keeps_shapes():
    layer = LRN()
    assert layer.compute_output_shape((None, 7, 9, 64)) == (None, 7, 9, 64)
    x = np.ones((1, 2, 2, 3), "float32")
    np.testing.assert_array_equal(np.asarray(layer(x, training=True)), np.asarray(layer(x, training=False)))
