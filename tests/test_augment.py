"""The augmentation functions against NumPy, on in-memory images (no files)."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.input import augment

SIZE, CROP = paper.IMAGE_SIZE, paper.CROP_SIZE
MARGIN = SIZE - CROP  # 32


def seeds(count: int, base: int = 0) -> tf.Tensor:
    """``count`` stateless seeds ``[base, i]``, as one ``[count, 2]`` tensor."""
    return tf.stack([tf.fill([count], tf.constant(base, tf.int64)), tf.range(count, dtype=tf.int64)], axis=1)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_crop_offsets_stay_inside_and_cover_every_position():
    # One graph over 3,000 seeds instead of 3,000 eager calls.
    draw = tf.function(
        lambda all_seeds: tf.map_fn(
            lambda seed: augment.crop_offset(seed, SIZE, CROP), all_seeds, fn_output_signature=tf.int32
        )
    )
    offsets = draw(seeds(3000)).numpy()
    assert offsets.min() == 0 and offsets.max() == MARGIN  # windows always inside the image
    for axis in (0, 1):
        assert set(offsets[:, axis]) == set(range(MARGIN + 1))  # all 33 positions, both axes
    # y and x are drawn independently: not the same value every time.
    assert np.mean(offsets[:, 0] == offsets[:, 1]) < 0.1


def test_flip_rate_is_near_half():
    flips = augment.flip_coin(tf.constant([1, 0]), (2000,)).numpy()
    assert abs(flips.mean() - 0.5) < 0.05  # 4.5 standard deviations


def test_lighting_alpha_has_the_papers_spread():
    alphas = augment.lighting_alpha(tf.constant([2, 0]), shape=(1000,)).numpy()
    assert alphas.shape == (1000, 3)
    assert abs(alphas.std() - paper.PCA_LIGHTING_STD) < 0.01
    assert abs(alphas.mean()) < 0.015


def test_sample_view_is_a_function_of_its_seed():
    first, again = augment.sample_view(tf.constant([5, 6])), augment.sample_view(tf.constant([5, 6]))
    other = augment.sample_view(tf.constant([5, 7]))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.alpha, other.alpha)


def test_pca_lighting_offset_matches_numpy_formula():
    rng = np.random.default_rng(1)
    eigenvectors, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # orthonormal columns p_i
    eigenvalues = np.array([0.2, 0.02, 0.005])
    alpha = np.array([0.3, -1.2, 0.7])
    # [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, on the 0-255 scale.
    expected = 255.0 * sum(eigenvectors[:, i] * alpha[i] * eigenvalues[i] for i in range(3))
    got = augment.pca_lighting_offset(tf.constant(alpha), eigenvalues, eigenvectors)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_normalize_subtracts_the_mean_and_adds_the_shift(image):
    rng = np.random.default_rng(2)
    mean = rng.uniform(0, 255, image.shape).astype(np.float32)
    shift = np.array([3.5, -2.0, 10.25], np.float32)
    np.testing.assert_allclose(augment.normalize(tf.constant(image), tf.constant(mean), tf.constant(shift)),
                               image - mean + shift, atol=1e-4)  # fmt: skip
    shifted = augment.normalize(tf.constant(image), shift=tf.constant(shift))
    np.testing.assert_allclose(shifted, image + shift, atol=1e-4)
    np.testing.assert_array_equal(augment.normalize(tf.constant(image)), image.astype(np.float32))


def test_crop_window_and_flip_match_numpy(image):
    window = augment.crop_window(tf.constant(image), tf.constant([7, 30]), CROP)
    np.testing.assert_array_equal(window, image[7 : 7 + CROP, 30 : 30 + CROP])
    mirrored = augment.flip_left_right(window, tf.constant(True))
    np.testing.assert_array_equal(mirrored, image[7 : 7 + CROP, 30 : 30 + CROP][:, ::-1])
    np.testing.assert_array_equal(augment.flip_left_right(window, tf.constant(False)), window)


def test_ten_crop_matches_numpy_slices_and_reflections(image):
    crops = augment.ten_crop(tf.constant(image), CROP).numpy()
    assert crops.shape == (paper.TEST_VIEWS, CROP, CROP, 3)
    corners = {"top-left": (0, 0), "top-right": (0, MARGIN), "bottom-left": (MARGIN, 0),
               "bottom-right": (MARGIN, MARGIN), "centre": (MARGIN // 2, MARGIN // 2)}  # fmt: skip
    for index, name in enumerate(augment.TEN_CROP_NAMES):
        y, x = corners[name.removesuffix(" mirrored")]
        expected = image[y : y + CROP, x : x + CROP]
        if name.endswith("mirrored"):
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(crops[index], expected, err_msg=name)
    np.testing.assert_array_equal(augment.center_offset(SIZE, CROP), [16, 16])


def test_resize_and_center_crop_follows_section_2():
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (SIZE, 400, 3), dtype=np.uint8)  # shorter side already 256
    np.testing.assert_array_equal(augment.resize_and_center_crop(tf.constant(wide)), wide[:, 72:328])
    tall = augment.resize_and_center_crop(tf.constant(rng.integers(0, 256, (700, 300, 3), dtype=np.uint8)))
    assert tall.shape == (SIZE, SIZE, 3) and tall.dtype == tf.uint8
    flat = augment.resize_and_center_crop(tf.fill([512, 600, 3], tf.constant(77, tf.uint8)))
    np.testing.assert_array_equal(flat, np.full((SIZE, SIZE, 3), 77))


def _whole_image_resize_then_crop(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """§2 as `resize_and_center_crop` computed it before issue 17: rescale the whole image, crop."""
    height, width = image.shape[:2]
    new_height, new_width = (max(size, round(side * size / min(height, width))) for side in (height, width))
    resized = tf.image.resize(image, [new_height, new_width], antialias=True).numpy()
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return np.clip(np.round(resized[top : top + size, left : left + size]), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "shape", [(250, 333), (300, 240), (375, 500), (500, 375), (1000, 1500), (100, 90), (20, 1000), (3, 2000)]
)
def test_central_patch_alone_equals_the_whole_image_resized_then_cropped(shape):
    """Only the central patch is resampled now (issue 17 item 9); the pixels are those of the
    whole-image resize, but for float rounding of the shifted grid: one level, on at most 0.05% of
    the values at photo shapes (0.15% measured at 3×2000)."""
    rng = np.random.default_rng(sum(shape))
    smooth = tf.image.resize(rng.uniform(0, 255, (6, 8, 3)), shape, method="bicubic").numpy()
    for image in (np.clip(smooth, 0, 255).astype(np.uint8), rng.integers(0, 256, (*shape, 3), dtype=np.uint8)):
        got = augment.resize_and_center_crop(tf.constant(image)).numpy().astype(int)
        expected = _whole_image_resize_then_crop(image).astype(int)
        assert got.shape == (SIZE, SIZE, 3)
        assert np.abs(got - expected).max() <= 1 and np.mean(got != expected) <= 2e-3
