"""Learning-rate schedules and optimizers."""

import keras
import numpy as np
import pytest

from inception_keras.optim import OptimConfig, current_learning_rate, make_optimizer, make_schedule

STEPS = 10  # steps per epoch


def lr_at_epoch(schedule, epoch: float) -> float:
    return float(schedule(int(epoch * STEPS)))


def test_paper_schedule_decays_4_percent_every_8_epochs():
    schedule = make_schedule(OptimConfig(schedule="paper", learning_rate=0.01), STEPS, epochs=40)
    assert lr_at_epoch(schedule, 0) == pytest.approx(0.01)
    assert lr_at_epoch(schedule, 7.9) == pytest.approx(0.01)
    assert lr_at_epoch(schedule, 8) == pytest.approx(0.01 * 0.96)
    assert lr_at_epoch(schedule, 15) == pytest.approx(0.01 * 0.96)
    assert lr_at_epoch(schedule, 16) == pytest.approx(0.01 * 0.96 ** 2)
    assert lr_at_epoch(schedule, 24) == pytest.approx(0.01 * 0.96 ** 3)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    schedule = make_schedule(OptimConfig(schedule="cosine", learning_rate=1.0, warmup_epochs=1), STEPS, epochs=5)
    assert lr_at_epoch(schedule, 0) == 0.0
    assert lr_at_epoch(schedule, 0.5) == pytest.approx(0.5)
    assert lr_at_epoch(schedule, 1) == pytest.approx(1.0)
    assert lr_at_epoch(schedule, 3) == pytest.approx(0.5)  # halfway through the 4 decay epochs
    assert lr_at_epoch(schedule, 5) == pytest.approx(0.0, abs=1e-7)


def test_cosine_without_warmup_and_constant():
    no_warmup = make_schedule(OptimConfig(schedule="cosine", learning_rate=1.0, warmup_epochs=0), STEPS, 2)
    assert lr_at_epoch(no_warmup, 0) == 1.0 and lr_at_epoch(no_warmup, 1) == pytest.approx(0.5)
    assert make_schedule(OptimConfig(schedule="constant", learning_rate=0.3), STEPS, 2) == 0.3


@pytest.mark.parametrize("warmup", [float("nan"), float("inf"), -0.5])
def test_cosine_schedule_refuses_a_negative_or_non_finite_warmup(warmup):
    with pytest.raises(ValueError, match=r"warmup_epochs must be >= 0 and finite"):
        make_schedule(OptimConfig(schedule="cosine", learning_rate=1.0, warmup_epochs=warmup), STEPS, 5)


@pytest.mark.parametrize("name, cls", [("sgd", keras.optimizers.SGD), ("adam", keras.optimizers.Adam),
                                       ("adamw", keras.optimizers.AdamW)])
def test_optimizers(name, cls):
    optimizer = make_optimizer(OptimConfig(optimizer=name, schedule="constant", learning_rate=0.1,
                                           weight_decay=1e-4, ema=True), STEPS, 3)
    assert type(optimizer) is cls  # Keras' own class: saved runs need nothing of this package
    assert optimizer.use_ema and optimizer.weight_decay == pytest.approx(1e-4)
    assert current_learning_rate(optimizer) == pytest.approx(0.1)
    if name == "sgd":
        assert optimizer.momentum == 0.9


def test_weight_decay_spares_biases_and_batchnorm():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    for variable in model.trainable_variables:
        variable.assign(keras.ops.ones(variable.shape))
    optimizer = make_optimizer(OptimConfig(optimizer="adamw", schedule="constant", learning_rate=0.1,
                                           weight_decay=0.1), STEPS, 1)
    zeros = [keras.ops.zeros(v.shape) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zeros, model.trainable_variables, strict=True))  # zero gradients: only decay moves
    after = {v.name: float(keras.ops.convert_to_numpy(v).mean()) for v in model.trainable_variables}
    assert after == {"kernel": pytest.approx(1 - 0.1 * 0.1), "bias": 1.0, "gamma": 1.0, "beta": 1.0}


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="sgd, adam, adamw"):
        make_optimizer(OptimConfig(optimizer="rmsprop"), STEPS, 1)
    with pytest.raises(ValueError, match="paper, cosine, constant"):
        make_schedule(OptimConfig(schedule="step"), STEPS, 1)


def small_model_and_batch():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    x = np.random.default_rng(0).standard_normal((16, 6)).astype("float32")
    y = np.arange(16) % 3
    return model, x, y


def test_a_model_compiled_with_it_saves_and_loads(tmp_path):
    model, x, y = small_model_and_batch()
    model.compile(make_optimizer(OptimConfig(optimizer="adamw"), STEPS, 1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is type(model.optimizer) and int(loaded.optimizer.iterations) == 1
    loaded.train_on_batch(x, y)
    assert int(loaded.optimizer.iterations) == 2
