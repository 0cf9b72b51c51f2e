"""ViewNormalization: the pipeline's float work as a Keras layer, against NumPy, on tiny shapes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.network import layers
from alexnet_tf.network.layers import FLIP, IMAGE, LIGHTING, OFFSET, ViewNormalization

SIZE, CROP = 12, 8


def random_views(rng: np.random.Generator, leading: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {
        IMAGE: rng.integers(0, 256, (*leading, CROP, CROP, 3), dtype=np.uint8),
        OFFSET: rng.integers(0, SIZE - CROP + 1, (*leading, 2)).astype(np.int32),
        FLIP: rng.random(leading) < 0.5,
        LIGHTING: rng.normal(0, 5, (*leading, 3)).astype(np.float32),
    }


def expected_view(image, offset, flip, lighting, mean_mode, mean):
    """§2 and §4.1 by hand: mean window at the crop's corner, lighting, then the mirror."""
    view = image.astype(np.float32)
    if mean_mode == layers.MEAN_IMAGE:
        y, x = offset
        view = view - (mean[y : y + CROP, x : x + CROP] - lighting)
    elif mean_mode == layers.MEAN_CHANNEL:
        view = view - (mean - lighting)
    else:
        view = view + lighting
    return view[:, ::-1] if flip else view


@pytest.mark.parametrize("mean_mode", layers.MEAN_MODES)
@pytest.mark.parametrize("leading", [(5,), (2, 3)])
def test_matches_numpy(mean_mode, leading):
    rng = np.random.default_rng(0)
    views = random_views(rng, leading)
    mean = {
        layers.MEAN_IMAGE: rng.uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32),
        layers.MEAN_CHANNEL: np.array([120.0, 115.5, 100.25], np.float32),
        layers.MEAN_NONE: None,
    }[mean_mode]
    layer = ViewNormalization(mean_mode, SIZE)
    if mean is not None:
        layer.set_mean(mean)
    got = layer({key: tf.constant(value) for key, value in views.items()}).numpy()
    assert got.shape == (*leading, CROP, CROP, 3) and got.dtype == np.float32
    flat = {key: value.reshape(-1, *value.shape[len(leading) :]) for key, value in views.items()}
    for index, view in enumerate(got.reshape(-1, CROP, CROP, 3)):
        expected = expected_view(*(flat[key][index] for key in (IMAGE, OFFSET, FLIP, LIGHTING)), mean_mode, mean)
        np.testing.assert_allclose(view, expected, atol=1e-4)


def test_mixed_policy_outputs_the_compute_dtype_and_keeps_a_float32_mean():
    layer = ViewNormalization(layers.MEAN_IMAGE, SIZE, dtype="mixed_bfloat16")
    out = layer(random_views(np.random.default_rng(1), (2,)))
    assert out.dtype == tf.bfloat16 and layer.mean_values.dtype == "float32"


def test_bad_mean_modes():
    with pytest.raises(ValueError, match="mean='pixel'"):
        ViewNormalization("pixel", SIZE)
    with pytest.raises(ValueError, match="mean=.none., no mean to set"):
        ViewNormalization(layers.MEAN_NONE, SIZE).set_mean([1.0, 2.0, 3.0])


def test_a_model_on_views_saves_and_loads_with_its_mean(tmp_path):
    rng = np.random.default_rng(2)
    inner = keras.Sequential([keras.Input((CROP, CROP, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    layer = ViewNormalization(layers.MEAN_IMAGE, SIZE)
    layer.set_mean(rng.uniform(0, 255, (SIZE, SIZE, 3)))
    model = layers.with_view_normalization(inner, layer)
    views = random_views(rng, (3,))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(views), model(views), rtol=1e-5, atol=1e-4)
    restored = loaded.get_layer(layer.name)
    assert isinstance(restored, ViewNormalization)
    np.testing.assert_array_equal(restored.mean_values.numpy(), layer.mean_values.numpy())
    assert restored.get_config()["mean"] == layers.MEAN_IMAGE
    assert not restored.trainable_weights  # the mean is data, not a parameter
