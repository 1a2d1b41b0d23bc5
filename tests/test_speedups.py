"""The opt-in TensorFlow fast paths: each gives the plain model's values and gradients, ``accelerate`` keeps
the layers' classes and saved files stock, ``restore`` takes the paths off, and bad names or backends fail."""

import functools
import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from inception_keras import build_googlenet, compile_googlenet
from inception_keras.layers import LRN
from inception_keras.optim import OptimConfig, make_optimizer
from inception_keras.speedups import (SPEEDUPS, accelerate, applied, check_speedups, compiled_apply,
                                      fused_batch_norm_call, restore, xla_lrn_call)

STEPS = 10


def lrn_reference(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """TensorFlow's own LRN kernel with Caffe's alpha / n."""
    return tf.nn.local_response_normalization(x, size // 2, k, alpha / size, beta)


def value_and_gradient(fn, x, *weights):
    """``fn(x)`` and the gradients of a loss weighting every channel differently, for ``x`` and ``weights``."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2 * tf.sin(tf.range(y.shape[-1], dtype=tf.float32)))
    return [y, *tape.gradient(loss, [x, *weights])]


def assert_all_close(got, expected, tolerance):
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("beta, scale", [(0.75, 1.0), (0.75, 30.0), (0.5, 10.0), (0.6, 10.0)])
def test_xla_lrn_equals_tensorflows_kernel_and_its_gradient(beta, scale):
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 5, 13)) * scale, tf.float32)
    layer = LRN(beta=beta, alpha=1e-3)
    got = value_and_gradient(functools.partial(xla_lrn_call, layer), x)
    assert_all_close(got, value_and_gradient(lambda t: lrn_reference(t, beta=beta, alpha=1e-3), x), 1e-4)


def test_xla_lrn_keeps_bfloat16():
    x = tf.cast(tf.constant(np.random.default_rng(2).standard_normal((1, 4, 4, 8)) * 20, tf.float32), tf.bfloat16)
    y, grad = value_and_gradient(functools.partial(xla_lrn_call, LRN(dtype="mixed_bfloat16")), x)
    assert y.dtype == tf.bfloat16 and grad.dtype == tf.bfloat16


def batch_norm(**kwargs):
    """A built BatchNormalization with non-trivial weights."""
    rng = np.random.default_rng(3)
    layer = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, **kwargs)
    layer.build((None, 6, 6, 5))
    values = {"gamma": rng.uniform(0.5, 1.5, 5), "beta": rng.normal(0, 0.3, 5), "moving_mean": rng.normal(0, 0.5, 5),
              "moving_variance": rng.uniform(0.5, 2, 5)}
    layer.set_weights([values[w.name] for w in layer.weights])
    return layer


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("center", [True, False])
def test_fused_batch_norm_equals_keras_values_gradients_and_moving_statistics(training, center):
    plain, fused = batch_norm(center=center), batch_norm(center=center)
    x = tf.constant(np.random.default_rng(4).normal(1.0, 2.0, (8, 6, 6, 5)), tf.float32)
    expected = value_and_gradient(lambda t: plain(t, training=training), x, *plain.trainable_weights)
    got = value_and_gradient(lambda t: fused_batch_norm_call(fused, t, training=training), x,
                             *fused.trainable_weights)
    assert_all_close(got, expected, 1e-3)
    assert_all_close(fused.get_weights(), plain.get_weights(), 1e-5)  # moving statistics updated alike
    if training:
        assert not np.allclose(plain.get_weights()[-1], batch_norm().get_weights()[-1])


def test_fused_batch_norm_falls_back_to_keras_where_the_kernel_does_not_apply():
    layer = keras.layers.BatchNormalization()
    x = tf.constant(np.random.default_rng(6).normal(size=(3, 4)), tf.float32)
    expected = layer(x, training=True).numpy()
    np.testing.assert_allclose(fused_batch_norm_call(layer, x, training=True).numpy(), expected, rtol=1e-6,
                               atol=1e-6)
    mixed = keras.layers.BatchNormalization(dtype="mixed_bfloat16")
    mixed.build((None, 3, 3, 4))
    assert fused_batch_norm_call(mixed, tf.ones((2, 3, 3, 4), tf.bfloat16), training=True).dtype == tf.bfloat16


def gradient_ops(fn, weights, x):
    """Op types of the traced graph computing the gradients of ``sum(fn(x))`` for ``weights``."""
    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fn(x))
        return tape.gradient(loss, weights)

    return {op.type for op in grads.get_concrete_function(x).graph.get_operations()}


def test_conv_bias_is_added_outside_the_fused_filter_gradient_with_the_same_values():
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((7, 7, 4)), keras.layers.Conv2D(6, 3, padding="same", activation="relu",
                                                                         bias_initializer="random_normal")])
    conv = model.layers[0]
    x = tf.constant(np.random.default_rng(8).normal(size=(3, 7, 7, 4)), tf.float32)
    assert "BiasAddGrad" in gradient_ops(conv, conv.trainable_weights, x)  # what oneDNN fuses into a slow kernel
    expected = value_and_gradient(conv, x, *conv.trainable_weights)
    accelerate(model, ["conv_bias"])
    ops = gradient_ops(conv, conv.trainable_weights, x)
    assert "BiasAddGrad" not in ops and "BiasAdd" not in ops and "Sum" in ops and "Conv2DBackpropFilter" in ops
    assert_all_close(value_and_gradient(conv, x, *conv.trainable_weights), expected, 1e-5)


def small_googlenet(variant):
    """A GoogLeNet at 128 px, where the aux heads pool to 2x2: BatchNorm sees 16 values per channel there."""
    keras.utils.set_random_seed(1)
    model = build_googlenet(5, input_shape=(128, 128, 3), variant=variant, dropout=0.0, aux_dropout=0.0)
    # Plain SGD with a small step: Adam's normalised updates would blow float rounding up to visible differences.
    return compile_googlenet(model, keras.optimizers.SGD(1e-5))


def outputs_and_gradients(model, x, y):
    """The heads' outputs in training mode and the gradients of the compiled loss, in a traced function."""
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = model.compute_loss(x, y, outputs)
        return outputs, tape.gradient(loss, model.trainable_weights)

    outputs, gradients = step(tf.constant(x))
    return [o.numpy() for o in outputs], [g.numpy() for g in gradients]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["paper", "bn"])
def test_an_accelerated_googlenet_computes_the_plain_ones_outputs_and_gradients(variant):
    x = np.random.default_rng(0).uniform(-1, 1, (4, 128, 128, 3)).astype("float32")
    y = {head: np.array([0, 1, 2, 3]) for head in ("main", "aux1", "aux2")}
    results = {}
    for kind in ("plain", "accelerated"):
        model = small_googlenet(variant)
        if kind == "accelerated":
            accelerate(model, ["fused_batch_norm", "conv_bias", "xla_lrn"])
        results[kind] = (*outputs_and_gradients(model, x, y), model.predict(x, verbose=0))
    (outputs, gradients, predicted), (expected_outputs, expected_gradients, expected_predicted) = (
        results["accelerated"], results["plain"])
    assert_all_close(outputs, expected_outputs, 1e-4)
    assert_all_close(predicted, expected_predicted, 1e-4)
    # Each weight's gradient within the spread rounding alone gives: the plain model with oneDNN on and off
    # differs by up to 2.3% (median 0.9%) for ``bn`` (BatchNorm's backward pass cancels large terms), 1.4% for
    # ``paper``, in the norm of the difference over the norm of the gradient.
    errors = [np.linalg.norm(got - expected) / np.linalg.norm(expected)
              for got, expected in zip(gradients, expected_gradients, strict=True)]
    assert len(errors) == len(model.trainable_weights) and max(errors) < 0.05 and np.median(errors) < 0.02


def test_accelerate_counts_restore_and_saved_classes(tmp_path):
    model = small_googlenet("paper")
    accelerate(model)
    counts = applied(model)
    assert counts == {"fused_batch_norm": 0, "conv_bias": 59, "xla_lrn": 2, "compiled_updates": 1}
    bn = accelerate(small_googlenet("bn"), ["fused_batch_norm"])
    assert applied(bn) == {"fused_batch_norm": 59, "conv_bias": 0, "xla_lrn": 0, "compiled_updates": 0}
    assert all(type(layer).__module__.startswith("keras") for layer in bn.layers)  # classes unchanged
    bn.save(tmp_path / "bn.keras")
    with zipfile.ZipFile(tmp_path / "bn.keras") as archive:
        config = json.loads(archive.read("config.json"))
    assert "inception_keras" not in json.dumps(config["config"]["layers"])
    restore(model)
    assert applied(model) == dict.fromkeys(SPEEDUPS, 0)


def test_compiled_updates_equal_keras_updates_and_fall_back_outside_a_compiled_step():
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).standard_normal((16, 6)).astype("float32")
    weights = {}
    for kind in ("compiled", "keras"):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(3)])
        optimizer = make_optimizer(OptimConfig(optimizer="adamw", learning_rate=0.05, weight_decay=0.1, ema=True,
                                               ema_momentum=0.5, warmup_epochs=0.2), STEPS, 2)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if kind == "compiled":
            accelerate(model, ["compiled_updates"])
        for _ in range(4):
            model.train_on_batch(x, np.arange(16) % 3)
        assert bool(optimizer.__dict__.get("_compiled_for")) == (kind == "compiled")  # the compiled update ran
        weights[kind] = [w.numpy() for w in [*model.weights, *optimizer.variables]]
    assert int(optimizer.iterations) == 4
    assert_all_close(weights["compiled"], weights["keras"], 1e-5)
    eager = make_optimizer(OptimConfig(optimizer="adam"), STEPS, 1)
    compiled_apply(eager, [keras.ops.ones(v.shape) for v in model.trainable_variables], model.trainable_variables)
    assert "_compiled_for" not in eager.__dict__ and int(eager.iterations) == 1


def test_unknown_speedups_and_other_backends_are_refused(monkeypatch):
    assert check_speedups("xla_lrn") == ("xla_lrn",)
    with pytest.raises(ValueError, match="unknown speed-up 'fast'; choose from fused_batch_norm"):
        check_speedups(["xla_lrn", "fast"])
    monkeypatch.setattr(keras.config, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="TensorFlow fast paths; the Keras backend is 'jax'"):
        accelerate(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
