"""`ViewNormalization`: the float end of the input pipeline as a Keras layer on the training device.

With ``InputConfig(normalise_in_model=True)`` the `tf.data` pipeline stops at the uint8 crop and
yields each view's parameters next to it; this layer, placed first in the training model, does
the rest of §4.1 and §2 on whatever device runs the model:

* ``image``: uint8 ``[..., crop, crop, 3]``, the crop at ``offset``, not yet mirrored;
* ``offset``: int32 ``[..., 2]``, the crop's top-left corner (y, x) in the 256×256 image;
* ``flip``: bool ``[...]``, mirror the view left-right;
* ``lighting``: float32 ``[..., 3]``, §4.1's PCA lighting offset (RGB, 0–255 scale) to add.

Output: ``mirror(float32(image) - mean_window(offset) + lighting)`` in the layer's compute dtype,
the same numbers the pipeline's float path (`alexnet_tf.data.pipeline.Preprocessor.normalise`)
produces for the same view. The mean is the paper's mean image (the crop's own window of it),
one mean per channel, or nothing; it is a non-trainable weight set from the dataset's metadata
(`Preprocessor.view_normalization`), so it is saved with the model.

Why: on a CPU host the float work (cast, mean, lighting, mirror) and the per-record random draws
cost 30–35% of the pipeline's CPU per image (README, Performance), and float32 crops are four
times the bytes of uint8 ones. On an accelerator the same work, done once per batch, is a few
elementwise passes. This is the layout of GPU
loaders such as DALI and of Keras' advice to put preprocessing in the model when training on a
GPU.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

MEAN_IMAGE = "image"  # §2: "subtracting the mean activity over the training set from each pixel".
MEAN_CHANNEL = "channel"  # named deviation: one mean per RGB channel (Caffe, most ports).
MEAN_NONE = "none"  # raw 0–255 RGB, for models that normalise inside and for show-augment.
MEAN_MODES = (MEAN_IMAGE, MEAN_CHANNEL, MEAN_NONE)

# The features the layer reads, as the pipeline names them.
IMAGE, OFFSET, FLIP, LIGHTING = "image", "offset", "flip", "lighting"


@keras.saving.register_keras_serializable(package="alexnet_tf")
class ViewNormalization(keras.layers.Layer):
    """Mirrors, casts, subtracts the mean and adds the lighting of a batch of uint8 views.

    Args:
      mean: `MEAN_IMAGE`, `MEAN_CHANNEL` or `MEAN_NONE`.
      image_size: side of the (square) images the crops were cut from, which is the mean
        image's side (§2: 256).
      **kwargs: `keras.layers.Layer` arguments. ``dtype`` sets the output dtype: "float32", or
        a mixed policy ("mixed_bfloat16") whose compute dtype is the output. The arithmetic is
        float32 whatever the policy; inputs are not autocast.

    The mean weights start at zero: set them with `set_mean` (or load them with the model).
    """

    def __init__(self, mean: str = MEAN_IMAGE, image_size: int = 256, **kwargs: Any) -> None:
        super().__init__(autocast=False, **kwargs)
        if mean not in MEAN_MODES:
            raise ValueError(f"mean={mean!r}: choose one of {', '.join(MEAN_MODES)}")
        self.mean = mean
        self.image_size = image_size
        # The shapes depend only on the config, so the weights exist before the first call and
        # `set_mean` works on a fresh layer.
        shape = {MEAN_IMAGE: (image_size, image_size, 3), MEAN_CHANNEL: (3,), MEAN_NONE: None}[mean]
        self.mean_values = None
        if shape is not None:
            self.mean_values = self.add_weight(
                shape=shape, initializer="zeros", dtype="float32", trainable=False, autocast=False, name="mean_values"
            )

    def set_mean(self, values: Any) -> None:
        """Sets the mean image ``[image_size, image_size, 3]`` or mean RGB ``[3]`` (0–255 scale)."""
        if self.mean_values is None:
            raise ValueError("mean='none' has no mean to set")
        self.mean_values.assign(tf.convert_to_tensor(values, tf.float32))

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        image = inputs[IMAGE]
        crop_size = image.shape[-2]
        # Any leading shape ([b] for training, [b, 10] for ten-crop evaluation) as one batch axis.
        images = tf.cast(tf.reshape(image, [-1, crop_size, crop_size, 3]), tf.float32)
        offsets = tf.reshape(tf.cast(inputs[OFFSET], tf.int32), [-1, 2])
        flips = tf.reshape(inputs[FLIP], [-1])
        shift = tf.reshape(tf.cast(inputs[LIGHTING], tf.float32), [-1, 1, 1, 3])
        # Same order of operations as the pipeline's float path: image - (mean - shift).
        if self.mean == MEAN_IMAGE:
            images = images - (self._mean_windows(offsets, crop_size) - shift)
        elif self.mean == MEAN_CHANNEL:
            images = images - (self.mean_values - shift)
        else:
            images = images + shift
        # The crop is mirrored after the mean window is subtracted, so the mean is mirrored with it.
        images = tf.where(flips[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(images, axis=[2]), images)
        return tf.reshape(tf.cast(images, self.compute_dtype), tf.shape(image))

    def _mean_windows(self, offsets: tf.Tensor, crop_size: int) -> tf.Tensor:
        """The ``crop_size``² window of the mean image at each offset: ``[b, crop, crop, 3]``."""
        steps = tf.range(crop_size)
        rows = offsets[:, :1] + steps  # [b, crop]
        columns = offsets[:, 1:] + steps
        windows = tf.gather(self.mean_values, rows)  # [b, crop, image_size, 3]
        return tf.gather(windows, columns, axis=2, batch_dims=1)

    def compute_output_shape(self, input_shape: dict[str, tuple]) -> tuple:
        return tuple(input_shape[IMAGE])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(mean=self.mean, image_size=self.image_size)
        return config


def view_inputs(crop_size: int) -> dict[str, keras.KerasTensor]:
    """Keras inputs for one batch of training views, as the pipeline yields them."""
    return {
        IMAGE: keras.Input((crop_size, crop_size, 3), dtype="uint8", name=IMAGE),
        OFFSET: keras.Input((2,), dtype="int32", name=OFFSET),
        FLIP: keras.Input((), dtype="bool", name=FLIP),
        LIGHTING: keras.Input((3,), dtype="float32", name=LIGHTING),
    }


def with_view_normalization(model: keras.Model, normalization: ViewNormalization) -> keras.Model:
    """``model`` behind ``normalization``: a model that takes the pipeline's uint8 views.

    ``model`` must take float images of side ``crop_size``; the result shares its layers and
    weights, so training it trains ``model``.
    """
    inputs = view_inputs(model.input_shape[1])
    return keras.Model(inputs, model(normalization(inputs)), name=f"{model.name}_on_views")
