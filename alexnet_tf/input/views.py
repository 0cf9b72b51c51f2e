"""Views: what the model sees of a decoded record, for training (§4.1) and for evaluation.

One interface, `Views`, with two implementations chosen by ``InputConfig.normalize_in_model``:

* `FloatViews` (the default): the pipeline does everything and yields float images — the uint8
  crop, mirrored, minus the mean (§2), plus §4.1's PCA lighting, cast to the output dtype;
* `Uint8Views`: the pipeline stops at the uint8 crop and yields it with the view's parameters
  (``{"image", "offset", "flip", "lighting"}``); the model's first layer,
  `alexnet_tf.network.layers.ViewNormalization`, finishes it on the training device.

Both draw views from the same distribution, and for the same view give the same numbers once
`ViewNormalization` has run (tested). `Statistics` holds what both need from the data: the mean
(image or RGB) and the lighting's eigen-decomposition, as tensors.

Randomness is stateless. `FloatViews` gives record ``i`` of the stream the seed
``fold_in(key, i)``; `Uint8Views` draws the crop corner from seed ``[key[0], i]`` and, per batch
``j``, the mirror bits and lighting offsets from ``[key[1], j]`` (a few random ops per record cost
the CPU about as much as a tenth of a JPEG decode). Stateless ops scramble their seed, so these
are independent streams.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import tensorflow as tf

from alexnet_tf.constants import MEAN_CHANNEL, MEAN_IMAGE
from alexnet_tf.errors import invalid
from alexnet_tf.input import augment
from alexnet_tf.input.decode import RecordDecoder
from alexnet_tf.network.layers import FLIP, IMAGE, LIGHTING, OFFSET, ViewNormalization
from alexnet_tf.records.metadata import DatasetStats


class Statistics:
    """The dataset's mean (§2) and PCA lighting (§4.1) as the views apply them.

    Args:
      mean: `MEAN_IMAGE`, `MEAN_CHANNEL` or `MEAN_NONE` (`alexnet_tf.constants`).
      image_size: side of the square images the views are cut from.
      mean_image: the ``[h, w, 3]`` mean image (0–255) for `MEAN_IMAGE`; resized if not
        ``image_size``².
      stats: the metadata's statistics (mean RGB, eigen-decomposition), or None.
      lighting_stddev: standard deviation of §4.1's alpha_i; 0 turns lighting off.
    """

    def __init__(
        self,
        mean: str,
        image_size: int,
        mean_image: np.ndarray | None,
        stats: DatasetStats | None,
        lighting_stddev: float,
    ) -> None:
        self.mean = mean
        self.image_size = image_size
        self.lighting_stddev = lighting_stddev
        self.mean_image = self.mirrored_mean_image = self.mean_rgb = None
        if mean == MEAN_IMAGE:
            image = tf.constant(mean_image, tf.float32)
            if mean_image.shape[:2] != (image_size, image_size):
                image = tf.image.resize(image, [image_size, image_size], antialias=True)
            self.mean_image = image
            # Windows of the mirrored mean image are the mirrored windows, without a float reverse.
            self.mirrored_mean_image = tf.reverse(image, axis=[1])
        elif mean == MEAN_CHANNEL:
            self.mean_rgb = tf.constant(stats.mean_rgb, tf.float32)
        self.eigenvalues = self.eigenvectors = None
        if lighting_stddev > 0 and stats is not None:
            self.eigenvalues = tf.constant(stats.eigenvalues, tf.float32)
            self.eigenvectors = tf.constant(stats.eigenvectors, tf.float32)

    def lighting_offset(self, alpha: tf.Tensor) -> tf.Tensor | None:
        """§4.1's RGB lighting offset ``[..., 3]`` for ``alpha [..., 3]``; None with lighting off."""
        if self.eigenvalues is None:
            return None
        return augment.pca_lighting_offset(alpha, self.eigenvalues, self.eigenvectors)

    def normalize(
        self,
        image: tf.Tensor,
        offset: tf.Tensor,
        alpha: tf.Tensor | None = None,
        mirrored: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """float32 ``image`` minus the mean, plus §4.1's lighting for ``alpha`` if lighting is on.

        With the mean image, the window subtracted is the one at ``offset`` of ``image``'s size,
        mirrored when ``mirrored`` is true (``image`` is then the mirrored window).
        """
        shift = None if alpha is None else self.lighting_offset(alpha)
        if self.mean_rgb is not None:
            shift = -self.mean_rgb if shift is None else shift - self.mean_rgb
        mean = None
        if self.mean_image is not None:
            mean = self._mean_window(offset, image.shape[0], mirrored)
        return augment.normalize(image, mean, shift)

    def view_normalization(self, dtype: str, **kwargs: Any) -> ViewNormalization:
        """The `ViewNormalization` layer with this mean set; output ``dtype`` (a mixed policy
        for "bfloat16" / "float16")."""
        policy = "float32" if dtype == "float32" else f"mixed_{dtype}"
        layer = ViewNormalization(self.mean, self.image_size, dtype=policy, **kwargs)
        if self.mean_image is not None:
            layer.set_mean(self.mean_image)
        elif self.mean_rgb is not None:
            layer.set_mean(self.mean_rgb)
        return layer

    def _mean_window(self, offset: tf.Tensor, size: int, mirrored: tf.Tensor | None) -> tf.Tensor:
        def window() -> tf.Tensor:
            return augment.crop_window(self.mean_image, offset, size)

        def mirrored_window() -> tf.Tensor:
            # Column x of the image is column (image_size - 1 - x) of the mirrored image.
            corner = tf.stack([offset[0], self.image_size - size - offset[1]])
            return augment.crop_window(self.mirrored_mean_image, corner, size)

        return window() if mirrored is None else tf.cond(mirrored, mirrored_window, window)


class Views(abc.ABC):
    """Makes a parsed record's training and evaluation views (see the module docstring).

    Args:
      decoder: parses and decodes the records.
      statistics: the mean and lighting to apply.
      crop_size: side of the views (§4.1: 224).
      dtype: the float output dtype (`FloatViews`), or `ViewNormalization`'s (`Uint8Views`).
    """

    # True if `finish_batch` draws per-batch randomness (the dataset then numbers its batches).
    PER_BATCH = False

    def __init__(self, decoder: RecordDecoder, statistics: Statistics, crop_size: int, dtype: str) -> None:
        if crop_size > decoder.image_size:
            raise invalid("crop_size", crop_size, f"at most the images' side, {decoder.image_size}")
        self.decoder = decoder
        self.statistics = statistics
        self.crop_size = crop_size
        self.dtype = dtype

    @abc.abstractmethod
    def train(self, features: dict[str, tf.Tensor], key: tf.Tensor, index: tf.Tensor) -> Any:
        """A random training view (§4.1) of record number ``index`` of the stream."""

    def finish_batch(self, views: Any, key: tf.Tensor, batch_index: tf.Tensor) -> Any:
        """Per-batch work on a batch of `train` views (nothing unless `PER_BATCH`)."""
        return views

    @abc.abstractmethod
    def center(self, features: dict[str, tf.Tensor]) -> Any:
        """The central ``crop_size``² patch."""

    @abc.abstractmethod
    def ten_crop(self, features: dict[str, tf.Tensor]) -> Any:
        """§4.1's ten test patches, leading dimension 10, in `augment.TEN_CROP_NAMES` order."""

    def center_offset(self) -> tf.Tensor:
        return augment.center_offset(self.decoder.image_size, self.crop_size)


class FloatViews(Views):
    """Float images ``[224, 224, 3]`` (``[10, 224, 224, 3]`` for ten-crop) in the output dtype."""

    def sample(self, seed: tf.Tensor) -> augment.View:
        """The §4.1 view (crop corner, mirror bit, lighting alpha) that ``seed`` draws."""
        return augment.sample_view(seed, self.decoder.image_size, self.crop_size, self.statistics.lighting_stddev)

    def apply(self, features: dict[str, tf.Tensor], view: augment.View) -> tf.Tensor:
        """The record cut, mirrored and lit as ``view`` says, minus the mean."""
        window = augment.flip_left_right(self.decoder.decode_window(features, view.offset, self.crop_size), view.flip)
        image = self.statistics.normalize(window, view.offset, view.alpha, mirrored=view.flip)
        return tf.cast(image, self.dtype)

    def train(self, features: dict[str, tf.Tensor], key: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        return self.apply(features, self.sample(tf.random.experimental.stateless_fold_in(key, index)))

    def center(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        offset = self.center_offset()
        image = self.statistics.normalize(self.decoder.decode_window(features, offset, self.crop_size), offset)
        return tf.cast(image, self.dtype)

    def ten_crop(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        image = self.statistics.normalize(self.decoder.decode(features), tf.zeros([2], tf.int32))
        return tf.cast(augment.ten_crop(image, self.crop_size), self.dtype)


class Uint8Views(Views):
    """uint8 crops with their view parameters, for `ViewNormalization`: a dict keyed `IMAGE`,
    `OFFSET`, `FLIP`, `LIGHTING`."""

    PER_BATCH = True

    def train(self, features: dict[str, tf.Tensor], key: tf.Tensor, index: tf.Tensor) -> dict[str, tf.Tensor]:
        """The random crop and its corner; `finish_batch` draws the mirror bits and lighting."""
        seed = tf.stack([key[0], index])
        offset = augment.crop_offset(seed, self.decoder.image_size, self.crop_size)
        return {IMAGE: self.decoder.decode_window(features, offset, self.crop_size), OFFSET: offset}

    def finish_batch(self, views: dict[str, tf.Tensor], key: tf.Tensor, batch_index: tf.Tensor) -> dict[str, tf.Tensor]:
        """Draws a batch's mirror bits and lighting offsets in one go."""
        seed = tf.stack([key[1], batch_index])
        count = tf.shape(views[OFFSET])[:1]
        flip_seed, alpha_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        alpha = augment.lighting_alpha(alpha_seed, self.statistics.lighting_stddev, count)
        lighting = self.statistics.lighting_offset(alpha)
        return {
            **views,
            FLIP: augment.flip_coin(flip_seed, count),
            LIGHTING: tf.zeros(tf.concat([count, [3]], 0)) if lighting is None else lighting,
        }

    def center(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        offset = self.center_offset()
        return fixed_views(self.decoder.decode_window(features, offset, self.crop_size), offset, False)

    def ten_crop(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        patches = augment.five_crop(self.decoder.decode(features), self.crop_size)
        offsets = tf.constant(augment.ten_crop_offsets(self.decoder.image_size, self.crop_size) * 2, tf.int32)
        flips = tf.constant([False] * 5 + [True] * 5)
        return fixed_views(tf.concat([patches, patches], axis=0), offsets, flips)


def fixed_views(image: tf.Tensor, offset: tf.Tensor, flip: bool | tf.Tensor) -> dict[str, tf.Tensor]:
    """Evaluation views for `ViewNormalization`: given crops, offsets and mirror bits, no lighting."""
    return {
        IMAGE: image,
        OFFSET: offset,
        FLIP: tf.convert_to_tensor(flip),
        LIGHTING: tf.zeros(offset.shape[:-1] + [3]),
    }
