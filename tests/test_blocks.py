"""Inception module and aux head: shapes, names, kernels, pooling choice."""

import keras
import numpy as np
import pytest
from keras import layers

from inception_keras.blocks import InceptionSpec, aux_head, aux_pooling, conv_unit, inception_module
from inception_keras.pooling import AdaptiveAveragePooling2D
from inception_keras.variants import VARIANTS, get_variant

SPEC_3A = InceptionSpec("3a", 64, 96, 128, 16, 32, 32)


def test_inception_module_output_and_layer_names():
    x = keras.Input((28, 28, 192))
    model = keras.Model(x, inception_module(x, SPEC_3A, VARIANTS["paper"]))
    assert model.output.shape == (None, 28, 28, 256) == (None, 28, 28, SPEC_3A.output_channels)
    names = {layer.name for layer in model.layers}
    for branch in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj"):
        assert f"inception_3a_{branch}" in names
    assert "inception_3a_pool" in names and "inception_3a_output" in names
    assert model.get_layer("inception_3a_5x5").kernel.shape == (5, 5, 16, 32)
    assert model.get_layer("inception_3a_pool").pool_size == (3, 3)


def test_torchvision_variant_keeps_the_3x3_quirk_and_batchnorm():
    x = keras.Input((28, 28, 192))
    model = keras.Model(x, inception_module(x, SPEC_3A, VARIANTS["torchvision"]))
    assert model.get_layer("inception_3a_5x5").kernel.shape == (3, 3, 16, 32)
    assert not model.get_layer("inception_3a_5x5").use_bias
    assert model.get_layer("inception_3a_5x5_bn").epsilon == pytest.approx(1e-3)


def test_conv_unit_bias_only_without_batchnorm():
    x = keras.Input((8, 8, 3))
    paper = keras.Model(x, conv_unit(x, 4, 3, "c", VARIANTS["paper"]))
    bn = keras.Model(x, conv_unit(x, 4, 3, "c", VARIANTS["bn"]))
    assert paper.get_layer("c").use_bias and [l.name for l in paper.layers][-1] == "c_relu"
    assert not bn.get_layer("c").use_bias and bn.get_layer("c_bn") is not None
    assert np.all(np.asarray(paper(np.random.default_rng(0).standard_normal((1, 8, 8, 3)))) >= 0)


@pytest.mark.parametrize("side, variant, layer_type", [
    (14, "paper", layers.AveragePooling2D),       # the paper's 5x5/3: 14 -> 4
    (16, "bn", layers.AveragePooling2D),          # (16 - 5) // 3 + 1 = 4
    (6, "paper", layers.AdaptiveAveragePooling2D),
    (2, "bn", layers.AdaptiveAveragePooling2D),   # 32 px input: upsampled to 4x4
    (20, "paper", layers.AdaptiveAveragePooling2D),
    (14, "torchvision", layers.AdaptiveAveragePooling2D),
    (None, "paper", AdaptiveAveragePooling2D),   # the sizes are known only at run time: bins worked out then
])
def test_aux_pooling_uses_paper_pool_only_where_it_gives_4x4(side, variant, layer_type):
    x = keras.Input((side, side, 8))
    pooled = aux_pooling(x, "aux1", VARIANTS[variant])
    model = keras.Model(x, pooled)
    assert type(model.get_layer("aux1_pool")) is layer_type
    assert pooled.shape[1:] == (4, 4, 8)


def test_aux_head_has_2048_features_and_named_output():
    x = keras.Input((14, 14, 512))
    out = aux_head(x, 7, "aux1", VARIANTS["paper"], 0.7, "softmax")
    model = keras.Model(x, out)
    assert model.get_layer("aux1_fc").kernel.shape == (2048, 1024)
    assert model.get_layer("aux1_drop").rate == 0.7
    assert model.output_names == ["aux1"] and out.shape == (None, 7)
    probs = np.asarray(model(np.ones((2, 14, 14, 512), "float32")))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(ValueError, match="paper, bn, torchvision"):
        get_variant("resnet")
