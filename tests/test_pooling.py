"""Ceil-mode max pooling and run-time adaptive average pooling against NumPy references and Keras' layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from inception_keras.pooling import (AdaptiveAveragePooling2D, CeilModeMaxPooling2D, ceil_mode_max_pooling,
                                     ceil_mode_size, keras_padding_for)

SHAPES = [(7, 7), (8, 8), (7, 8), (9, 12), (13, 5), (3, 3), (4, 4), (2, 5)]


def numpy_ceil_mode_max_pool(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Caffe's / PyTorch's ``ceil_mode=True`` max pooling: windows from the top-left, clipped at the far edges."""
    rows, columns = (int(np.ceil((side - size) / stride)) + 1 for side in x.shape[1:3])
    out = np.empty((x.shape[0], rows, columns, x.shape[3]), x.dtype)
    for i in range(rows):
        for j in range(columns):
            out[:, i, j] = x[:, i * stride:i * stride + size, j * stride:j * stride + size].max(axis=(1, 2))
    return out


def numpy_adaptive_average_pool(x: np.ndarray, bins: int) -> np.ndarray:
    """PyTorch's adaptive average pooling: bin ``i`` of ``n`` spans ``floor(i n / o)`` to ``ceil((i + 1) n / o)``."""
    def edges(side: int) -> list[tuple[int, int]]:
        return [(i * side // bins, -(-(i + 1) * side // bins)) for i in range(bins)]

    return np.stack([np.stack([x[:, r0:r1, c0:c1].mean(axis=(1, 2)) for c0, c1 in edges(x.shape[2])], axis=1)
                     for r0, r1 in edges(x.shape[1])], axis=1)


def dynamic(layer: keras.layers.Layer, channels: int):
    """``layer`` traced with unknown height and width, as a variable-size model's compiled functions run it."""
    return tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, channels), tf.float32)])


@pytest.mark.parametrize("height, width, size", [(h, w, size) for h, w in SHAPES for size in (2, 3)
                                                  if min(h, w) >= size])
def test_ceil_mode_pooling_matches_numpy_static_and_dynamic(height, width, size):
    x = np.random.default_rng(height * width).normal(size=(2, height, width, 3)).astype("float32")
    expected = numpy_ceil_mode_max_pool(x, size, 2)
    image = keras.Input((height, width, 3))
    built = keras.Model(image, ceil_mode_max_pooling(image, size, 2, "pool"))
    np.testing.assert_array_equal(built(x), expected)
    np.testing.assert_array_equal(dynamic(CeilModeMaxPooling2D(size, 2), 3)(x), expected)
    assert built.output.shape[1:3] == expected.shape[1:3]


def test_unknown_sides_keep_the_channel_count_static():
    """TFLite's converter needs every convolution's input channels: the pooling must not hide them."""
    traced = dynamic(CeilModeMaxPooling2D(3, 2), 5).get_concrete_function()
    assert traced.structured_outputs.shape.as_list() == [None, None, None, 5]


def test_negative_values_never_lose_to_the_padding():
    x = -np.arange(1, 2 * 4 * 4 + 1, dtype="float32").reshape(1, 4, 8, 1)  # all negative: zero padding would win
    np.testing.assert_array_equal(CeilModeMaxPooling2D(3, 2)(x), numpy_ceil_mode_max_pool(x, 3, 2))


@pytest.mark.parametrize("height, width, layer_type, padding", [
    (8, 14, keras.layers.MaxPooling2D, "same"),  # even sides: "same" is ceil mode
    (7, 13, keras.layers.MaxPooling2D, "valid"),  # odd sides: "valid" is
    (7, 8, CeilModeMaxPooling2D, "valid"),  # mixed parity: neither
    (None, 8, CeilModeMaxPooling2D, "valid"),  # unknown until run time
])
def test_builder_uses_keras_layer_wherever_a_keras_padding_fits(height, width, layer_type, padding):
    image = keras.Input((height, width, 3))
    model = keras.Model(image, ceil_mode_max_pooling(image, 3, 2, "pool3_3x3_s2"))
    layer = model.get_layer("pool3_3x3_s2")
    assert type(layer) is layer_type and layer.padding == padding


def test_padding_table_for_googlenets_pools():
    assert ceil_mode_size(25, 3, 2) == 12 and ceil_mode_size(14, 3, 2) == 7 and ceil_mode_size(7, 2, 2) == 4
    assert keras_padding_for(14, 3, 2) == {"same"} and keras_padding_for(25, 3, 2) == {"valid"}
    assert keras_padding_for(14, 2, 2) == {"same", "valid"} and keras_padding_for(7, 2, 2) == {"same"}


@pytest.mark.parametrize("height, width", [(14, 14), (5, 9), (17, 30), (4, 4), (6, 11), (33, 7)])
def test_adaptive_pooling_with_unknown_size_matches_keras_and_numpy(height, width):
    x = np.random.default_rng(height + width).normal(size=(2, height, width, 5)).astype("float32")
    expected = numpy_adaptive_average_pool(x, 4)
    np.testing.assert_allclose(keras.layers.AdaptiveAveragePooling2D(4)(x), expected, atol=1e-6)
    np.testing.assert_allclose(dynamic(AdaptiveAveragePooling2D(4), 5)(x), expected, atol=1e-6)


def test_adaptive_pooling_gradient_spreads_each_bin_evenly():
    x = tf.ones((1, 6, 5, 1))
    layer = dynamic(AdaptiveAveragePooling2D(4), 1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(layer(x))
    gradient = tape.gradient(total, x).numpy()[0, :, :, 0]
    rows = np.array([sum(start <= r < end for start, end in [(0, 2), (1, 3), (3, 5), (4, 6)]) / 2 for r in range(6)])
    columns = np.array([sum(start <= c < end for start, end in [(0, 2), (1, 3), (2, 4), (3, 5)]) / 2
                        for c in range(5)])
    np.testing.assert_allclose(gradient, np.outer(rows, columns), rtol=1e-6)


def test_layers_save_and_load_safely(tmp_path):
    image = keras.Input((None, None, 3))
    x = CeilModeMaxPooling2D(3, 2, name="pool1_3x3_s2")(image)
    model = keras.Model(image, AdaptiveAveragePooling2D(4, name="aux1_pool")(x))
    path = tmp_path / "pools.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).normal(size=(1, 23, 17, 3)).astype("float32")
    np.testing.assert_array_equal(loaded(x), model(x))
    assert type(loaded.get_layer("pool1_3x3_s2")) is CeilModeMaxPooling2D
    assert loaded.get_layer("pool1_3x3_s2").pool_size == (3, 3)
