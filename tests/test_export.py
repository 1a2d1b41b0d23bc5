"""Export of the inference model: BatchNorm folding is exact, SavedModel / TFLite predict what Keras does."""

import json
import sys

import keras
import numpy as np
import pytest

from inception_keras import build_googlenet, export, inference_model
from inception_keras.errors import run_cli
from inception_keras.export import (agreement, export_model, export_savedmodel, export_tflite, float32_model,
                                    fold_batchnorm, foldable_pairs, keras_predict, main, savedmodel_predict,
                                    sub_batched, tflite_predict)
from inception_keras.googlenet import dtype_policy

SIZE, CLASSES = 40, 4


def randomise_batchnorm(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNorm non-trivial statistics and affine terms, as training would."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.3, shape))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            layer.beta.assign(rng.normal(0, 0.2, shape))
    return model


def sharpen(model: keras.Model, factor: float = 30.0) -> keras.Model:
    """Scale the main classifier so softmax outputs are peaked (an untrained model is near-uniform)."""
    classifier = model.get_layer("classifier")
    classifier.kernel.assign(classifier.kernel * factor)
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(-1, 1, (12, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def bn_model():
    keras.utils.set_random_seed(0)
    return sharpen(randomise_batchnorm(build_googlenet(CLASSES, input_shape=(SIZE, SIZE, 3), variant="bn")))


@pytest.fixture(scope="module")
def exported(bn_model):
    return export_model(bn_model)


@pytest.mark.parametrize("variant", ["bn", "torchvision"])
def test_folding_keeps_the_logits(variant, images):
    keras.utils.set_random_seed(1)
    model = randomise_batchnorm(inference_model(build_googlenet(CLASSES, input_shape=(SIZE, SIZE, 3),
                                                                variant=variant, classifier_activation=None)))
    before = [w.copy() for w in model.get_weights()]
    folded = fold_batchnorm(model)
    expected = model(images, training=False).numpy()
    got = folded(images, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)), "the original changed"
    assert not any(isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Dropout))
                   for layer in folded.layers)
    assert len(foldable_pairs(model)) == 57  # every conv of the main path
    convs = [layer for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.use_bias and type(layer) is keras.layers.Conv2D for layer in convs)  # stock Keras convolutions
    assert all(type(layer).__module__.startswith("keras.") for layer in folded.layers)  # loads without us
    assert folded.input.name == "image" and folded.output_names == ["main"]


def test_paper_variant_only_loses_dropout(images):
    model = inference_model(build_googlenet(CLASSES, input_shape=(SIZE, SIZE, 3), variant="paper"))
    folded = fold_batchnorm(model)
    assert len(folded.layers) == len(model.layers) - 1
    assert {type(layer) for layer in model.layers if isinstance(layer, keras.layers.Conv2D)} == {keras.layers.Conv2D}
    assert {type(layer) for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)} == {keras.layers.Conv2D}
    np.testing.assert_array_equal(folded(images).numpy(), model(images).numpy())


def test_a_conv_read_twice_is_not_folded():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    bn = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(inputs, keras.layers.Add()([bn, conv]))
    randomise_batchnorm(model)
    assert foldable_pairs(model) == {}
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(fold_batchnorm(model)(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_export_model_drops_the_aux_heads(bn_model, exported):
    assert len(bn_model.outputs) == 3
    assert exported.output_names == ["main"]


@pytest.mark.parametrize("parts", [1, 2, 5, 12])
def test_sub_batched_predicts_like_the_whole_batch(exported, images, parts):
    split = sub_batched(exported, parts)(images[:11]).numpy()  # 11 images: slices of unequal size
    assert split.shape == (11, CLASSES)
    # one-image slices run other oneDNN kernels, which round differently
    np.testing.assert_allclose(split, exported.predict_on_batch(images[:11]), rtol=1e-4, atol=1e-5)


def test_sub_batched_needs_a_part():
    with pytest.raises(ValueError, match="at least 1"):
        sub_batched(keras.Sequential([keras.layers.Dense(1)]), 0)


def test_savedmodel_predicts_like_keras(bn_model, exported, images, tmp_path):
    path = export_savedmodel(exported, tmp_path / "savedmodel")
    assert (path / "saved_model.pb").is_file()
    result = agreement(keras_predict(bn_model, images), savedmodel_predict(path, images, batch_size=5))
    assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-5


@pytest.fixture(scope="module")
def float32_tflite(exported, tmp_path_factory):
    return export_tflite(exported, tmp_path_factory.mktemp("tflite") / "model.tflite")


def test_tflite_float32_equals_keras(bn_model, float32_tflite, images):
    predictions = tflite_predict(float32_tflite, images, batch_size=5)  # 12 images: the last batch is padded
    result = agreement(keras_predict(bn_model, images), predictions)
    assert predictions.shape == (12, CLASSES)
    assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("quantization, size_ratio", [
    ("int8", 0.3),
    pytest.param("dynamic", 0.3, marks=pytest.mark.slow),
    pytest.param("float16", 0.6, marks=pytest.mark.slow),
])
def test_quantized_tflite_agrees(bn_model, exported, float32_tflite, images, tmp_path, quantization, size_ratio):
    calibration = np.random.default_rng(2).uniform(-1, 1, (32, SIZE, SIZE, 3)).astype("float32")
    path = export_tflite(exported, tmp_path / f"{quantization}.tflite", quantization,
                         representative_data=calibration)
    result = agreement(keras_predict(bn_model, images), tflite_predict(path, images))
    assert result["top1_agreement"] >= 10 / 12, result
    assert path.stat().st_size < size_ratio * float32_tflite.stat().st_size


def test_int8_needs_representative_data(exported, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(exported, tmp_path / "x.tflite", "int8")
    assert not (tmp_path / "x.tflite").exists()


@pytest.fixture(scope="module")
def mixed_bn_model():
    keras.utils.set_random_seed(3)
    with dtype_policy("mixed_bfloat16"):
        model = build_googlenet(CLASSES, input_shape=(SIZE, SIZE, 3), variant="bn")
    return sharpen(randomise_batchnorm(model))


def test_float32_model_copies_a_mixed_model(mixed_bn_model, exported, images):
    mixed = export_model(mixed_bn_model)
    assert mixed.get_layer("classifier").compute_dtype == "bfloat16"  # export_model keeps the policy
    copy = float32_model(mixed)
    assert all(layer.compute_dtype == "float32" and layer.variable_dtype == "float32" for layer in copy.layers)
    assert [layer.name for layer in copy.layers] == [layer.name for layer in mixed.layers]
    assert copy.input.name == "image" and copy.output_names == ["main"]
    assert all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), mixed.get_weights(), strict=True))
    assert mixed.get_layer("classifier").compute_dtype == "bfloat16"  # the original is not changed
    result = agreement(mixed.predict_on_batch(images), copy.predict_on_batch(images))
    assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 2e-2
    assert float32_model(exported) is exported  # a float32 model is converted as it is


@pytest.mark.parametrize("variant", ["bn", "paper"])  # paper: LRN, no BatchNorm
def test_mixed_precision_model_exports_to_tflite(variant, mixed_bn_model, images, tmp_path):
    if variant == "bn":
        model = mixed_bn_model
    else:
        keras.utils.set_random_seed(4)
        with dtype_policy("mixed_bfloat16"):
            model = sharpen(build_googlenet(CLASSES, input_shape=(SIZE, SIZE, 3), variant=variant))
    path = export_tflite(export_model(model), tmp_path / "mixed.tflite")  # TFLite has no bfloat16 kernels
    result = agreement(keras_predict(model, images), tflite_predict(path, images))
    # Keras computes in bfloat16, TFLite in float32
    assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 2e-2, result


@pytest.mark.slow
def test_variable_size_model_exports_to_tflite_and_runs_at_any_size(tmp_path):
    """None sides: ceil-mode pools keep static channels for the converter; the runner resizes per image size."""
    model = export_model(sharpen(randomise_batchnorm(
        build_googlenet(CLASSES, input_shape=(None, None, 3), variant="bn"))))
    path = export_tflite(model, tmp_path / "variable.tflite")
    for height, width in ((SIZE, SIZE), (45, 38)):
        images = np.random.default_rng(height).uniform(-1, 1, (5, height, width, 3)).astype("float32")
        result = agreement(keras_predict(model, images), tflite_predict(path, images, batch_size=3))
        assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4, (height, width, result)


def test_agreement_counts_top1_and_max_difference():
    reference = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])
    other = np.array([[0.8, 0.2], [0.7, 0.3], [0.5, 0.5]])
    result = agreement(reference, other)
    assert result == {"images": 3, "top1_agreement": pytest.approx(2 / 3), "max_abs_diff": pytest.approx(0.3)}
    with pytest.raises(ValueError):
        agreement(reference, other[:2])


@pytest.fixture(scope="module")
def saved_model_file(tmp_path_factory):
    keras.utils.set_random_seed(2)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    randomise_batchnorm(build_googlenet(CLASSES, input_shape=(32, 32, 3), variant="bn")).save(path)
    return path


@pytest.mark.slow
def test_cli_exports_and_checks(saved_model_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main([str(saved_model_file), "--format", "savedmodel", "tflite", "--output-dir", str(out),
                   "--check-images", "8"])
    assert status == 0
    report = json.loads((out / "export.json").read_text())
    assert report["folded_batchnorm"] is True and report["check_images"] == "uniform random images"
    assert set(report["formats"]) == {"savedmodel", "tflite"}
    assert (out / "savedmodel" / "saved_model.pb").is_file() and (out / "model_float32.tflite").is_file()
    for row in report["formats"].values():
        assert row["images"] == 8 and row["top1_agreement"] == 1.0 and row["max_abs_diff"] < 1e-4
    assert "top-1 agreement" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_exports_a_mixed_precision_model(tmp_path, capsys):
    keras.utils.set_random_seed(5)
    with dtype_policy("mixed_bfloat16"):
        model = randomise_batchnorm(build_googlenet(CLASSES, input_shape=(32, 32, 3), variant="bn"))
    model.save(tmp_path / "mixed.keras")
    out = tmp_path / "out"
    assert run_cli(main, [str(tmp_path / "mixed.keras"), "--format", "savedmodel", "tflite", "--output-dir",
                          str(out), "--check-images", "8"]) == 0
    report = json.loads((out / "export.json").read_text())
    for row in report["formats"].values():
        assert row["images"] == 8 and row["top1_agreement"] == 1.0 and row["max_abs_diff"] < 2e-2
    assert (out / "model_float32.tflite").is_file() and "top-1 agreement" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--format", "tflite-int8"], "calibrate"),
    (["--format", "onnx"], "invalid choice"),
    (["--check-images", "-1"], "--check-images"),
])
def test_cli_user_errors_write_nothing(saved_model_file, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert run_cli(main, [str(saved_model_file), "--output-dir", str(out), *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert not out.exists()


def test_cli_checks_the_output_dir_before_exporting(saved_model_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli(main, [str(saved_model_file), "--format", "savedmodel", "--output-dir", str(blocker / "out")]) == 2
    error = capsys.readouterr().err
    assert error == (f"error: cannot write to {blocker / 'out'}: {blocker} is not a writable directory; "
                     "choose another --output-dir\n")
    assert list(tmp_path.iterdir()) == [blocker]


def test_cli_refuses_to_overwrite(saved_model_file, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "savedmodel").mkdir(parents=True)
    assert run_cli(main, [str(saved_model_file), "--format", "savedmodel", "--output-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_rejects_a_check_dataset_with_other_classes(tmp_path, capsys):
    keras.utils.set_random_seed(6)
    path = tmp_path / "two.keras"
    build_googlenet(2, input_shape=(32, 32, 1), variant="bn", aux_heads=False).save(path)
    out = tmp_path / "out"
    assert run_cli(main, [str(path), "--dataset", "sample", "--output-dir", str(out)]) == 2  # 10 classes
    assert capsys.readouterr().err == ("error: the model has 2 classes but dataset 'sample' has 10: pass the dataset "
                                       "the model was trained on (--dataset, --data-dir)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.keras"]


def test_cli_rejects_a_corrupt_model_in_one_line(saved_model_file, tmp_path, capsys):
    data = bytearray(saved_model_file.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(b ^ 0xFF for b in data[middle:middle + 4096])  # zip directory intact
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert run_cli(main, [str(corrupt), "--output-dir", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: the model {corrupt} is corrupt (model.weights.h5 fails its CRC-32 "
                                       "check): re-save or re-train it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.keras"]


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def run_export_command(monkeypatch, argv):
    """``python -m inception_keras.export ARGV`` in this process; returns its exit status."""
    monkeypatch.setattr(sys, "argv", ["python -m inception_keras.export", *argv])
    with pytest.raises(SystemExit) as exit_info:
        export.cli()
    return exit_info.value.code


def test_an_interrupted_export_leaves_nothing_and_the_same_command_then_works(saved_model_file, tmp_path, capsys,
                                                                              monkeypatch):
    out = tmp_path / "new" / "out"
    argv = [str(saved_model_file), "--format", "savedmodel", "--output-dir", str(out), "--check-images", "4"]
    with monkeypatch.context() as patch:
        patch.setattr(export, "savedmodel_predict", interrupt)  # Ctrl-C once the SavedModel is written
        assert run_export_command(patch, argv) == 130
    assert capsys.readouterr().err == "error: interrupted; nothing was written; run the same command again\n"
    assert list(tmp_path.iterdir()) == []  # not even the directories it created
    assert run_export_command(monkeypatch, argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "savedmodel"]  # no staging directory left
    assert json.loads((out / "export.json").read_text())["formats"]["savedmodel"]["path"] == str(out / "savedmodel")


def test_an_interrupted_overwrite_keeps_the_previous_export(saved_model_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    (out / "savedmodel").mkdir(parents=True)
    (out / "savedmodel" / "old").write_text("old")
    (out / "export.json").write_text("{}")
    monkeypatch.setattr(export, "export_tflite", interrupt)  # after the SavedModel was written and checked
    argv = [str(saved_model_file), "--format", "savedmodel", "tflite", "--output-dir", str(out), "--check-images",
            "4", "--overwrite"]
    assert run_export_command(monkeypatch, argv) == 130
    assert "nothing was written" in capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["export.json", "savedmodel", "savedmodel/old"]
    assert (out / "export.json").read_text() == "{}"


def test_cli_missing_model(tmp_path, capsys):
    assert run_cli(main, [str(tmp_path / "nope.keras")]) == 2
    assert "does not exist" in capsys.readouterr().err
