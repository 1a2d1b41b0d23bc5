"""build_googlenet: parameter counts, endpoint shapes, sizes, saving, training, argument errors."""

import keras
import numpy as np
import pytest

from inception_keras import build_googlenet, compile_googlenet, endpoints, feature_extractor
from inception_keras.googlenet import INCEPTION_TABLE, MIN_INPUT_SIZE


def trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# Published counts (Caffe bvlc_googlenet / torchvision / the PyTorch paper model).
PARAM_COUNTS = [
    ("paper", 1000, False, 6_998_552), ("paper", 1000, True, 13_378_280),
    ("paper", 100, False, 6_076_052), ("paper", 100, True, 10_610_780),
    ("paper", 10, False, 5_983_802), ("paper", 10, True, 10_334_030),
    ("bn", 1000, False, 7_005_832), ("bn", 1000, True, 13_385_816),
    ("bn", 10, False, 5_991_082), ("bn", 10, True, 10_341_566),
    ("torchvision", 1000, False, 6_624_904), ("torchvision", 1000, True, 13_004_888),
    ("torchvision", 10, False, 5_610_154), ("torchvision", 10, True, 9_960_638),
]


@pytest.mark.parametrize("variant, classes, aux, expected", PARAM_COUNTS)
def test_trainable_parameter_counts_match_reference(variant, classes, aux, expected):
    # 64 px keeps the build cheap; the aux heads' 4x4 pooling makes the counts size-independent,
    # and one row is checked at 224 below.
    model = build_googlenet(classes, input_shape=(64, 64, 3), variant=variant, aux_heads=aux)
    assert trainable_params(model) == expected


def test_parameter_count_at_224_equals_caffe():
    assert trainable_params(build_googlenet(1000)) == 13_378_280


ENDPOINT_SHAPES_224 = {
    "conv1": (112, 112, 64), "pool1": (56, 56, 64), "conv2_reduce": (56, 56, 64), "conv2": (56, 56, 192),
    "pool2": (28, 28, 192), "inception_3a": (28, 28, 256), "inception_3b": (28, 28, 480),
    "pool3": (14, 14, 480), "inception_4a": (14, 14, 512), "inception_4b": (14, 14, 512),
    "inception_4c": (14, 14, 512), "inception_4d": (14, 14, 528), "inception_4e": (14, 14, 832),
    "pool4": (7, 7, 832), "inception_5a": (7, 7, 832), "inception_5b": (7, 7, 1024),
}


@pytest.mark.parametrize("variant", ["paper", "bn", "torchvision"])
def test_endpoint_shapes_at_224(variant):
    model = build_googlenet(1000, variant=variant)
    shapes = {name: tuple(t.shape[1:]) for name, t in endpoints(model).items()}
    assert shapes == ENDPOINT_SHAPES_224
    assert [o.shape[1:] for o in model.outputs] == [(1000,)] * 3
    assert model.output_names == ["main", "aux1", "aux2"]


def test_inception_table_is_the_papers():
    assert [b.name for b in INCEPTION_TABLE] == ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
    assert [b.output_channels for b in INCEPTION_TABLE] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]


def test_paper_variant_layers_follow_caffe():
    model = build_googlenet(1000, variant="paper")
    assert model.get_layer("conv1_7x7_s2").kernel.shape == (7, 7, 3, 64)
    assert model.get_layer("pool1_norm1").get_config()["size"] == 5
    assert model.get_layer("conv2_norm2").alpha == 1e-4
    assert model.get_layer("pool4_3x3_s2").pool_size == (3, 3)
    assert model.get_layer("pool5_drop").rate == 0.4
    assert model.get_layer("aux1_pool").pool_size == (5, 5) and model.get_layer("aux1_pool").strides == (3, 3)
    assert model.get_layer("aux2_fc").kernel.shape == (2048, 1024)
    assert not any("_bn" in layer.name for layer in model.layers)


def test_torchvision_variant_layout():
    model = build_googlenet(10, input_shape=(64, 64, 3), variant="torchvision")
    assert model.get_layer("pool4_2x2_s2").pool_size == (2, 2)
    assert model.get_layer("pool5_drop").rate == 0.2
    assert not any(type(layer).__name__ == "LRN" for layer in model.layers)


@pytest.mark.parametrize("shape", [(96, 96, 3), (299, 299, 3), (64, 48, 1), (MIN_INPUT_SIZE, MIN_INPUT_SIZE, 1)])
def test_other_input_sizes_and_grayscale(shape):
    model = build_googlenet(7, input_shape=shape, variant="bn")
    x = np.random.default_rng(0).uniform(-1, 1, (2, *shape)).astype("float32")
    outputs = model(x, training=False)
    for probs in outputs:
        assert probs.shape == (2, 7)
        np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)


def test_variable_size_input_uses_adaptive_aux_pool():
    model = build_googlenet(7, input_shape=(None, None, 3), variant="paper")
    for side in (40, 100):
        main, aux1, _ = model(np.zeros((1, side, side, 3), "float32"))
        assert main.shape == aux1.shape == (1, 7)


@pytest.mark.parametrize("shape", [(None, None, 3), (None, 64, 3)])
def test_variable_size_model_with_aux_heads_trains_and_predicts_at_several_sizes(shape):
    """Compiled train / predict functions see the unknown sides: the aux pooling must work them out at run time."""
    model = compile_googlenet(build_googlenet(5, input_shape=shape, variant="bn"))
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 4])
    for height, width in ((40, 64), (67, 64)):
        images = rng.uniform(-1, 1, (4, height, width, 3)).astype("float32")
        history = model.fit(images, {"main": labels, "aux1": labels, "aux2": labels}, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert [p.shape for p in model.predict(images, verbose=0)] == [(4, 5)] * 3


def caffe_pool(side: int, size: int = 3) -> int:
    """Caffe's / torchvision's ceil-mode pooled side, stride 2, no padding."""
    return int(np.ceil((side - size) / 2)) + 1


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
@pytest.mark.parametrize("height, width", [(200, 200), (225, 225), (200, 225), (97, 64)])
def test_pools_give_caffes_ceil_mode_sizes_at_any_size(variant, height, width):
    """padding="same" alone would give one more row or column wherever a pooled map is odd (200 px: 13, not 12)."""
    model = build_googlenet(7, input_shape=(height, width, 3), variant=variant)
    pool4 = 2 if variant == "torchvision" else 3
    for axis, side in ((1, height), (2, width)):
        conv1 = (side + 6 - 7) // 2 + 1
        pool1 = caffe_pool(conv1)
        pool2 = caffe_pool(pool1)
        pool3 = caffe_pool(pool2)
        expected = {"pool1": pool1, "pool2": pool2, "pool3": pool3, "pool4": caffe_pool(pool3, pool4)}
        found = {name: tensor.shape[axis] for name, tensor in endpoints(model, tuple(expected)).items()}
        assert found == expected


def test_pools_at_224_are_keras_max_pooling_with_same_padding():
    """Every pooled map is even at 224 px, where "same" is ceil mode: the model holds Keras' own layer."""
    model = build_googlenet(7, input_shape=(224, 224, 3), variant="bn")
    pools = [layer for layer in model.layers if "_s2" in layer.name and "pool" in layer.name]
    assert [layer.name for layer in pools] == ["pool1_3x3_s2", "pool2_3x3_s2", "pool3_3x3_s2", "pool4_3x3_s2"]
    assert all(type(layer) is keras.layers.MaxPooling2D and layer.padding == "same" for layer in pools)
    assert endpoints(model, ("pool2",))["pool2"].shape == (None, 28, 28, 192)


def test_small_input_tensor_is_rejected_and_numpy_class_counts_accepted():
    with pytest.raises(ValueError, match="at least 32x32"):
        build_googlenet(3, input_tensor=keras.Input((20, 20, 3)))
    labels = np.array([0, 2, 1])
    model = build_googlenet(labels.max() + 1, input_shape=(32, 32, 3), aux_heads=False)  # a NumPy integer
    assert model.output.shape == (None, 3)


def test_include_top_false_pooling_and_logits():
    base = build_googlenet(input_shape=(64, 64, 3), include_top=False)
    assert base.output.shape == (None, 2, 2, 1024) and len(base.outputs) == 1
    assert build_googlenet(input_shape=(64, 64, 3), include_top=False, pooling="avg").output.shape == (None, 1024)
    assert build_googlenet(input_shape=(64, 64, 3), include_top=False, pooling="max").output.shape == (None, 1024)
    single = build_googlenet(7, input_shape=(64, 64, 3), aux_heads=False, classifier_activation=None)
    assert single.output_names == ["main"]
    logits = np.asarray(single(np.ones((1, 64, 64, 3), "float32")))
    assert not np.allclose(logits.sum(-1), 1.0)


def test_input_tensor_and_feature_extractor():
    inputs = keras.Input((64, 64, 3))
    model = build_googlenet(7, input_tensor=inputs, variant="bn")
    assert model.inputs[0] is inputs
    features = feature_extractor(model, ("pool2", "inception_4d"))
    out = features(np.zeros((1, 64, 64, 3), "float32"))
    assert set(out) == {"pool2", "inception_4d"} and out["inception_4d"].shape == (1, 4, 4, 528)
    # the feature extractor shares the weights
    assert features.get_layer("conv1_7x7_s2") is model.get_layer("conv1_7x7_s2")


@pytest.mark.parametrize("variant", ["paper", "bn", "torchvision"])
def test_save_and_safe_load_give_identical_predictions(variant, tmp_path):
    model = build_googlenet(7, input_shape=(64, 64, 3), variant=variant)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")
    path = tmp_path / f"{variant}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    for before, after in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0), strict=True):
        np.testing.assert_array_equal(before, after)
    assert loaded.output_names == ["main", "aux1", "aux2"]
    clone = keras.Model.from_config(model.get_config())
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]
    assert trainable_params(clone) == trainable_params(model)


@pytest.mark.parametrize("variant", ["paper", "bn", "torchvision"])
def test_one_training_step_gives_finite_loss_and_gradient_everywhere(variant):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build_googlenet(7, input_shape=(32, 32, 3), variant=variant)
    x = tf.random.uniform((4, 32, 32, 3), -1, 1)
    y = tf.constant([0, 3, 6, 2])
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        main, aux1, aux2 = model(x, training=True)
        loss = loss_fn(y, main) + 0.3 * loss_fn(y, aux1) + 0.3 * loss_fn(y, aux2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert np.isfinite(float(loss))
    silent = [w.path for w, g in zip(model.trainable_weights, grads, strict=True) if g is None or not np.any(np.asarray(g))]
    assert silent == []


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
    ({"input_shape": (31, 64, 3)}, "at least 32x32"),
    ({"input_shape": (64, 64)}, "input_shape must be"),
    ({"input_shape": (64, 64, 0)}, "channel count"),
    ({"variant": "inception_v3"}, "unknown variant"),
    ({"pooling": "sum", "include_top": False}, "pooling must be"),
    ({"dropout": 1.0}, "dropout must be a number in"),
    ({"dropout": "0.5"}, "dropout must be a number in"),
    ({"aux_dropout": -0.1}, "aux_dropout must be a number in"),
    ({"aux_dropout": None}, "aux_dropout must be a number in"),
    ({"num_classes": True}, "num_classes must be an integer"),
    ({"num_classes": 10.0}, "num_classes must be an integer"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    kwargs = {"input_shape": (64, 64, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        build_googlenet(**kwargs)
