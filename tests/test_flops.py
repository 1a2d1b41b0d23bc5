"""The multiply-add counter against the reference figures and hand-computed layers.

What is counted: conv + dense multiply-adds of the inference path (``main`` head)
for one image; bias, BatchNorm, ReLU, pooling, LRN and softmax are not.
"""

import keras
import pytest

from inception_keras import build_googlenet, inference_model
from inception_keras.flops import (count_multiply_adds, inference_flops, layer_multiply_adds,
                                   per_layer_multiply_adds, training_flops)

# Aux heads at 224 px, 1000 classes: 1x1 conv 128 on 4x4x512 (aux1) / 4x4x528 (aux2), FC 2048->1024, FC 1024->1000.
AUX_MULTIPLY_ADDS = (4 * 4 * 128 * 512 + 2048 * 1024 + 1024 * 1000) + (4 * 4 * 128 * 528 + 2048 * 1024 + 1024 * 1000)


@pytest.fixture(scope="module")
def models_224():
    return {variant: build_googlenet(1000, variant=variant) for variant in ("paper", "bn", "torchvision")}


def test_paper_variant_matches_the_reference_1_58_g(models_224):
    macs = count_multiply_adds(inference_model(models_224["paper"]))
    assert macs == 1_582_671_872
    assert round(macs / 1e9, 2) == 1.58


def test_torchvision_layout_matches_the_reference_1_50_g(models_224):
    macs = count_multiply_adds(inference_model(models_224["torchvision"]))
    assert macs == 1_498_376_192
    assert round(macs / 1e9, 2) == 1.50


def test_batchnorm_adds_no_multiply_adds(models_224):
    assert count_multiply_adds(inference_model(models_224["bn"])) == count_multiply_adds(
        inference_model(models_224["paper"]))


def test_aux_heads_are_counted_only_in_the_training_model(models_224):
    model = models_224["paper"]
    assert count_multiply_adds(model) - count_multiply_adds(inference_model(model)) == AUX_MULTIPLY_ADDS


def test_layers_counted_by_hand(models_224):
    counts = per_layer_multiply_adds(inference_model(models_224["paper"]))
    assert counts["conv1_7x7_s2"] == 112 * 112 * 64 * 7 * 7 * 3
    assert counts["conv2_3x3"] == 56 * 56 * 192 * 3 * 3 * 64
    assert counts["inception_3a_5x5"] == 28 * 28 * 32 * 5 * 5 * 16
    assert counts["inception_5b_pool_proj"] == 7 * 7 * 128 * 832
    assert counts["classifier"] == 1024 * 1000
    assert not any(name.startswith("aux") for name in counts)
    assert "pool1_norm1" not in counts and "pool5" not in counts


def test_other_conv_kinds():
    inputs = keras.Input((8, 8, 4))
    grouped = keras.layers.Conv2D(6, 3, padding="same", groups=2, name="grouped")(inputs)
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="depthwise")(inputs)
    separable = keras.layers.SeparableConv2D(5, 3, padding="valid", name="separable")(inputs)
    dense = keras.layers.Dense(3, name="dense")(inputs)  # applied at every pixel
    model = keras.Model(inputs, [grouped, depthwise, separable, dense])
    counts = per_layer_multiply_adds(model)
    assert counts["grouped"] == 8 * 8 * 6 * 3 * 3 * 2
    assert counts["depthwise"] == 8 * 8 * 8 * 3 * 3
    assert counts["separable"] == 6 * 6 * 4 * 3 * 3 + 6 * 6 * 4 * 5
    assert counts["dense"] == 8 * 8 * 4 * 3
    assert layer_multiply_adds(model.get_layer("dense")) == counts["dense"]


def test_unknown_input_size_is_a_clear_error():
    model = build_googlenet(10, input_shape=(None, None, 3), aux_heads=False)
    with pytest.raises(ValueError, match="fixed input_shape"):
        count_multiply_adds(model)


def test_flops_conventions():
    assert inference_flops(10) == 20
    assert training_flops(10) == 60
