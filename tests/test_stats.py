"""`PixelStats`: exact sums, merging, and the §4.1 PCA against NumPy."""

from __future__ import annotations

import numpy as np
from PIL import Image

from alexnet_tf.prepare.stats import PixelStats


def random_images(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 128, 3)
    return [np.clip(rng.integers(0, 128, (size, size, 3)) + tint, 0, 255).astype(np.uint8) for _ in range(count)]


def accumulate(arrays: list[np.ndarray], size: int) -> PixelStats:
    stats = PixelStats(size)
    for array in arrays:
        stats.add(Image.fromarray(array))
    return stats


def test_sums_are_exact_past_the_uint16_flush():
    arrays = random_images(600, 4)  # > 257 images: the uint16 buffer is flushed twice
    stats = accumulate(arrays, 4)
    stacked = np.stack(arrays).astype(np.int64)
    np.testing.assert_array_equal(stats.image_sum, stacked.sum(axis=0))
    flat = stacked.reshape(-1, 3)
    np.testing.assert_array_equal(stats.second_moments, flat.T @ flat)
    assert stats.images == 600


def test_merged_shards_equal_one_pass_and_survive_a_checkpoint():
    arrays = random_images(30, 8, seed=1)
    whole = accumulate(arrays, 8)
    merged = PixelStats(8)
    for part in (arrays[:7], arrays[7:20], arrays[20:]):
        merged.merge(PixelStats.from_arrays(accumulate(part, 8).to_arrays()))
    assert merged.to_dataset_stats() == whole.to_dataset_stats()
    np.testing.assert_array_equal(merged.mean_image(), whole.mean_image())


def test_pca_matches_numpy():
    arrays = random_images(10, 16, seed=2)
    result = accumulate(arrays, 16).to_dataset_stats()
    flat = np.stack(arrays).reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(result.mean_rgb, flat.mean(axis=0), rtol=1e-12)
    covariance = np.cov(flat / 255.0, rowvar=False, bias=True)
    values, vectors = np.array(result.eigenvalues), np.array(result.eigenvectors)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(covariance)[::-1], rtol=1e-9)
    np.testing.assert_allclose(covariance @ vectors, vectors * values, atol=1e-12)  # columns are eigenvectors
    assert all(v[np.abs(v).argmax()] > 0 for v in vectors.T)  # deterministic signs
