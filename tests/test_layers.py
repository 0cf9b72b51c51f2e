"""LocalResponseNormalization against a NumPy transcription of the paper's formula (§3.3)."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.network.layers import LocalResponseNormalization


def lrn_reference(a: np.ndarray, n: int, k: float, alpha: float, beta: float) -> np.ndarray:
    """b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2) ** beta."""
    channels = a.shape[-1]
    b = np.empty_like(a, dtype=np.float64)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[..., i] = a[..., i] / (k + alpha * np.sum(a[..., lo : hi + 1] ** 2, axis=-1)) ** beta
    return b


@pytest.fixture
def activations():
    # ReLU-like activations large enough for the normaliser to matter at alpha = 1e-4.
    return np.abs(np.random.default_rng(0).normal(0, 60, size=(2, 4, 3, 11))).astype(np.float32)


def test_paper_defaults():
    layer = LocalResponseNormalization()
    assert (layer.size, layer.k, layer.alpha, layer.beta) == (5, 2.0, 1e-4, 0.75)


def test_matches_formula_with_paper_constants(activations):
    out = LocalResponseNormalization()(activations)
    expected = lrn_reference(activations, n=5, k=2.0, alpha=1e-4, beta=0.75)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # The normaliser is far from 1 here, and dividing alpha by n (Caffe/PyTorch) is visibly different.
    assert np.max(np.abs(expected - activations)) > 1.0
    caffe_style = lrn_reference(activations, n=5, k=2.0, alpha=1e-4 / 5, beta=0.75)
    assert not np.allclose(out, caffe_style, rtol=1e-3)


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_edges_are_clipped(size):
    # Strong alpha so every channel's window, including the clipped ones at both edges, shows.
    a = np.random.default_rng(size).uniform(0.5, 3.0, size=(1, 1, 1, 6)).astype(np.float32)
    out = LocalResponseNormalization(size=size, k=1.0, alpha=0.5, beta=1.0)(a)
    np.testing.assert_allclose(out, lrn_reference(a, n=size, k=1.0, alpha=0.5, beta=1.0), rtol=1e-5)
    # Channel 0 sees channels 0 .. size//2 only.
    window = a[0, 0, 0, : size // 2 + 1]
    assert np.isclose(out[0, 0, 0, 0], a[0, 0, 0, 0] / (1.0 + 0.5 * np.sum(window**2)), rtol=1e-5)


def test_bfloat16_inputs_are_normalized_in_float32_and_returned_as_bfloat16(activations):
    # TF has no bfloat16 LRN kernel; the layer goes through float32 and returns bfloat16.
    x = tf.constant(activations, dtype=tf.bfloat16)
    out = LocalResponseNormalization(dtype="mixed_bfloat16")(x)
    assert out.dtype == tf.bfloat16
    expected = lrn_reference(x.numpy().astype(np.float32), 5, 2.0, 1e-4, 0.75)
    np.testing.assert_allclose(tf.cast(out, tf.float32), expected, rtol=2e-2)


def test_config_round_trip():
    layer = LocalResponseNormalization(size=3, k=1.0, alpha=2e-4, beta=0.5, device="/CPU:0", name="lrn")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.size, clone.k, clone.alpha, clone.beta, clone.device, clone.name) == (
        3,
        1.0,
        2e-4,
        0.5,
        "/CPU:0",
        "lrn",
    )


@pytest.mark.parametrize("kwargs", [{"size": 4}, {"size": 0}, {"k": -1.0}, {"alpha": -1e-4}, {"beta": -0.5}])
def test_invalid_arguments_are_named(kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        LocalResponseNormalization(**kwargs)
