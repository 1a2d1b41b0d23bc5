"""LRN against a NumPy implementation of Caffe's formula, and its serialization."""

import keras
import numpy as np
import pytest

from inception_keras.layers import LRN


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


@pytest.mark.parametrize("size", [0, 4, -3])
def test_lrn_rejects_even_or_non_positive_size(size):
    with pytest.raises(ValueError, match="positive odd"):
        LRN(size=size)
