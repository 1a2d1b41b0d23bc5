"""A ``.keras`` file written with the package's former TensorFlow-tuned classes (``CpuConv2D``, ``BiasConv2D``,
``FusedBatchNormalization``, its optimizer subclasses) loads as stock Keras layers and predicts what it did."""

from pathlib import Path

import keras
import numpy as np

from inception_keras.legacy import CpuConv2D, FusedBatchNormalization, stock_class

EXPECT = Path(__file__).parent / "expect"


def test_a_file_with_the_former_classes_loads_and_predicts_the_same():
    model = keras.models.load_model(EXPECT / "legacy_layers.keras")
    expected = np.load(EXPECT / "legacy_layers.npz")
    np.testing.assert_allclose(model.predict(expected["images"], verbose=0), expected["logits"], rtol=1e-5,
                               atol=1e-6)
    names = [type(layer).__name__ for layer in model.layers]
    assert names == ["InputLayer", "CpuConv2D", "LRN", "BiasConv2D", "CpuConv2D", "FusedBatchNormalization",
                     "GlobalAveragePooling2D", "Dense"]
    assert isinstance(model.optimizer, keras.optimizers.AdamW) and int(model.optimizer.iterations) == 1
    model.train_on_batch(expected["images"], np.array([0, 1, 2, 0]))  # and trains on
    assert int(model.optimizer.iterations) == 2


def test_legacy_classes_stand_for_stock_ones():
    assert stock_class(CpuConv2D) is keras.layers.Conv2D
    assert stock_class(FusedBatchNormalization) is keras.layers.BatchNormalization
    assert stock_class(keras.layers.Dense) is keras.layers.Dense
    layer = CpuConv2D(3, 3, filter_gradient="matmul")  # the former setting is accepted and ignored
    assert "filter_gradient" not in layer.get_config()
