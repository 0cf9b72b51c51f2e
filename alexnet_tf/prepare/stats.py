"""Training-set pixel statistics (§2 mean activity, §4.1 RGB PCA), accumulated exactly.

§2 subtracts "the mean activity over the training set from each pixel"; §4.1 performs "PCA on
the set of RGB pixel values throughout the ImageNet training set". `PixelStats` accumulates,
image by image, the three sums these need — the per-pixel sum of the images, and the 3×3 sum of
``x xᵀ`` over all pixels — as exact integers (int64), so workers' partial sums merge in any
order to the same result as one pass, and an interrupted-then-resumed run gives bit-identical
statistics. `to_dataset_stats` turns them into the `DatasetStats` contract (mean RGB on the
0–255 scale; eigen-decomposition of the covariance of RGB/255).

The cross sums ``Σ x_i x_j`` come from Pillow histograms instead of a 65536×3 matrix product
(which costs more than decoding the image): ``x_i x_j = (x_i² + x_j² − |x_i − x_j|²) / 2``,
and ``Σ v²`` over a band is its 256-bin histogram dotted with ``0², 1², … 255²``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageChops

from alexnet_tf.records.metadata import DatasetStats

_SQUARES = np.arange(256, dtype=np.int64) ** 2
_PAIRS = ((0, 1), (0, 2), (1, 2))
_UINT16_IMAGES = np.iinfo(np.uint16).max // 255  # images whose pixel sums fit in uint16


class PixelStats:
    """Exact running sums over ``size × size`` RGB images; mergeable across workers."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images = 0
        self.second_moments = np.zeros((3, 3), np.int64)  # Σ over pixels of x xᵀ (0–255 values)
        self._image_sum = np.zeros((size, size, 3), np.int64)
        # Adding uint8 pixels into uint16 is 4x faster than into int64; 257 images fit.
        self._recent = np.zeros((size, size, 3), np.uint16)
        self._recent_images = 0

    @property
    def image_sum(self) -> np.ndarray:
        """Per-pixel sum of the images (int64, ``size × size × 3``)."""
        self._flush()
        return self._image_sum

    def add(self, image: Image.Image) -> None:
        """Adds one RGB image of ``size × size`` pixels."""
        if image.mode != "RGB" or image.size != (self.size, self.size):
            raise ValueError(f"expected a {self.size}x{self.size} RGB image, got {image.mode} {image.size}")
        if self._recent_images == _UINT16_IMAGES:
            self._flush()
        np.add(self._recent, np.asarray(image), out=self._recent)
        self._recent_images += 1
        self.second_moments += _second_moments(image)
        self.images += 1

    def _flush(self) -> None:
        if self._recent_images:
            self._image_sum += self._recent
            self._recent[...] = 0
            self._recent_images = 0

    def merge(self, other: PixelStats) -> None:
        """Adds another accumulator's sums (from another shard or worker)."""
        if other.size != self.size:
            raise ValueError(f"cannot merge statistics of {other.size}px images into {self.size}px")
        self._image_sum += other.image_sum
        self.second_moments += other.second_moments
        self.images += other.images

    def mean_image(self) -> np.ndarray:
        """The mean image, float32 ``size × size × 3`` on the 0–255 scale."""
        return (self.image_sum / max(self.images, 1)).astype(np.float32)

    def to_dataset_stats(self) -> DatasetStats:
        """Mean RGB (0–255) and the PCA of the RGB/255 covariance, eigenvalues descending.

        The covariance is the population covariance over all pixels of all images. Each
        eigenvector (a column) is signed so that its largest-magnitude component is positive,
        which makes the output deterministic; §4.1's lighting is symmetric in the sign.
        """
        if self.images == 0:
            raise ValueError("no images were accumulated")
        pixels = self.images * self.size * self.size
        mean = self.image_sum.sum(axis=(0, 1)) / pixels
        covariance = (self.second_moments / pixels - np.outer(mean, mean)) / 255.0**2
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
        signs = np.sign(eigenvectors[np.abs(eigenvectors).argmax(axis=0), range(3)])
        eigenvectors = eigenvectors * np.where(signs == 0, 1.0, signs)
        return DatasetStats(
            mean_rgb=mean.tolist(),
            eigenvalues=eigenvalues.tolist(),
            eigenvectors=eigenvectors.tolist(),
            num_images=self.images,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The sums as arrays (for the resume checkpoint); `from_arrays` restores them."""
        return {
            "images": np.int64(self.images),
            "image_sum": self.image_sum,
            "second_moments": self.second_moments,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> PixelStats:
        stats = cls(arrays["image_sum"].shape[0])
        stats.images = int(arrays["images"])
        stats._image_sum = np.array(arrays["image_sum"], np.int64)
        stats.second_moments = np.array(arrays["second_moments"], np.int64)
        return stats


def _second_moments(image: Image.Image) -> np.ndarray:
    """Σ over pixels of ``x xᵀ`` for an RGB image, as exact int64, from Pillow histograms."""
    squares = np.asarray(image.histogram(), np.int64).reshape(3, 256) @ _SQUARES
    moments = np.diag(squares)
    bands = image.split()
    for i, j in _PAIRS:
        difference = ImageChops.difference(bands[i], bands[j]).histogram()
        cross = (squares[i] + squares[j] - np.asarray(difference, np.int64) @ _SQUARES) // 2
        moments[i, j] = moments[j, i] = cross
    return moments
