"""compile_googlenet and inference_model: loss weighting and metric routing are proven per head."""

import keras
import numpy as np
import pytest

from inception_keras import build_googlenet, compile_googlenet, inference_model
from inception_keras.heads import SparseCategoricalCrossentropy

NUM_CLASSES = 7


@pytest.fixture(scope="module")
def model_and_batch():
    keras.utils.set_random_seed(3)
    model = build_googlenet(NUM_CLASSES, input_shape=(32, 32, 3), variant="paper")
    compile_googlenet(model, "sgd")
    x = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    return model, x


def test_total_loss_is_main_plus_weighted_aux(model_and_batch):
    model, x = model_and_batch
    y = np.arange(16) % NUM_CLASSES
    main, aux1, aux2 = model.predict(x, verbose=0)
    ce = keras.losses.SparseCategoricalCrossentropy()
    parts = {"main": float(ce(y, main)), "aux1": float(ce(y, aux1)), "aux2": float(ce(y, aux2))}
    logs = model.evaluate(x, {"main": y, "aux1": y, "aux2": y}, batch_size=16, return_dict=True, verbose=0)
    for head, value in parts.items():
        assert logs[f"{head}_loss"] == pytest.approx(value, rel=1e-5)
    assert logs["loss"] == pytest.approx(parts["main"] + 0.3 * parts["aux1"] + 0.3 * parts["aux2"], rel=1e-5)


@pytest.mark.parametrize("target_head", ["main", "aux1", "aux2"])
def test_each_metric_reads_the_head_it_names(model_and_batch, target_head):
    model, x = model_and_batch
    predictions = dict(zip(["main", "aux1", "aux2"], model.predict(x, verbose=0), strict=True))
    y = predictions[target_head].argmax(-1)  # labels that only `target_head` gets all right
    logs = model.evaluate(x, {h: y for h in predictions}, batch_size=16, return_dict=True, verbose=0)
    for head, probs in predictions.items():
        assert logs[f"{head}_accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == y))
    assert logs[f"{target_head}_accuracy"] == 1.0
    assert min(logs[f"{h}_accuracy"] for h in predictions) < 1.0, "heads must disagree for the test to mean anything"
    top5 = np.mean([label in np.argsort(p)[-5:] for label, p in zip(y, predictions["main"], strict=True)])
    assert logs["main_top5_accuracy"] == pytest.approx(top5)


def test_aux_weight_is_a_parameter():
    model = build_googlenet(NUM_CLASSES, input_shape=(32, 32, 3))
    compile_googlenet(model, aux_weight=0.5)
    x = np.zeros((4, 32, 32, 3), "float32")
    y = np.array([0, 1, 2, 3])
    logs = model.evaluate(x, {h: y for h in ("main", "aux1", "aux2")}, return_dict=True, verbose=0)
    assert logs["loss"] == pytest.approx(logs["main_loss"] + 0.5 * (logs["aux1_loss"] + logs["aux2_loss"]), rel=1e-5)


def test_label_smoothing_matches_keras_categorical_crossentropy():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(NUM_CLASSES), size=8).astype("float32")
    y = rng.integers(0, NUM_CLASSES, 8)
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[y]
    ours = SparseCategoricalCrossentropy(label_smoothing=0.1)(y, probs)
    ref = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(one_hot, probs)
    assert float(ours) == pytest.approx(float(ref), rel=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy()(y, probs)
    assert float(SparseCategoricalCrossentropy()(y, probs)) == pytest.approx(float(plain), rel=1e-6)
    restored = SparseCategoricalCrossentropy.from_config(SparseCategoricalCrossentropy(0.2, True).get_config())
    assert (restored.label_smoothing, restored.from_logits) == (0.2, True)


def test_single_head_model_compiles_without_aux_metrics():
    model = compile_googlenet(build_googlenet(3, input_shape=(32, 32, 1), aux_heads=False))
    logs = model.evaluate(np.zeros((2, 32, 32, 1), "float32"), np.array([0, 2]), return_dict=True, verbose=0)
    assert "accuracy" in logs and "top5_accuracy" not in logs  # 3 classes: top-5 would be meaningless


@pytest.mark.parametrize("aux_heads", [True, False])
def test_first_fit_traces_the_train_step_once(aux_heads):
    model = compile_googlenet(build_googlenet(3, input_shape=(32, 32, 1), aux_heads=aux_heads), "adam")
    assert model.optimizer.built and model.optimizer.variables  # created by compile, not by the first trace
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)
    y = np.array([0, 1, 2, 0])
    model.fit(np.zeros((4, 32, 32, 1), "float32"), {h: y for h in model.output_names} if aux_heads else y,
              batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1  # a train step that creates variables is traced twice


def test_inference_model_shares_weights_and_drops_aux(model_and_batch, tmp_path):
    model, x = model_and_batch
    single = inference_model(model)
    assert single.output_names == ["main"] and len(single.outputs) == 1
    np.testing.assert_allclose(single.predict(x, verbose=0), model.predict(x, verbose=0)[0], rtol=1e-6)
    assert single.get_layer("classifier") is model.get_layer("classifier")
    assert not any(layer.name.startswith("aux") for layer in single.layers)
    path = tmp_path / "inference.keras"
    single.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), single.predict(x, verbose=0))


def test_compile_rejects_bad_arguments():
    model = build_googlenet(NUM_CLASSES, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="aux_weight"):
        compile_googlenet(model, aux_weight=-1)
    with pytest.raises(ValueError, match="label_smoothing"):
        compile_googlenet(model, label_smoothing=1.0)
    with pytest.raises(ValueError, match="include_top=True"):
        compile_googlenet(build_googlenet(input_shape=(32, 32, 3), include_top=False, pooling="avg"))


@pytest.mark.parametrize("labels", [[7, 0, 1], [-1, 0, 1], [5, 0, 1]])
def test_loss_rejects_labels_outside_the_classes(labels):
    """Out-of-range labels one-hot encode to zeros: without the check they would add no loss, silently."""
    import tensorflow as tf

    probabilities = np.full((3, 5), 0.2, "float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be class indices"):
        SparseCategoricalCrossentropy()(np.array(labels), probabilities)


def test_fit_with_one_based_labels_fails_instead_of_training(model_and_batch):
    import tensorflow as tf

    model, x = model_and_batch
    one_based = np.arange(16) % NUM_CLASSES + 1  # NUM_CLASSES itself is out of range
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be class indices"):
        model.fit(x, {"main": one_based, "aux1": one_based, "aux2": one_based}, epochs=1, verbose=0)
