"""AlexNet's custom layers: local response normalisation, per-tower device placement, and
`ViewNormalization`, the float end of the input pipeline as the training model's first layer.

Every class is registered with `keras.saving.register_keras_serializable`, so a ``.keras``
file that uses them loads with ``safe_mode=True`` once `alexnet_tf` is imported.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.constants import LRN_CAFFE, LRN_PAPER, LRN_VARIANTS, MEAN_CHANNEL, MEAN_IMAGE, MEAN_MODES, MEAN_NONE
from alexnet_tf.errors import InputError, invalid

_PACKAGE = "alexnet_tf"


class DevicePlacement:
    """Mixin that builds and calls a Keras layer under ``tf.device(device)``.

    The paper trains each tower on its own GPU (§3.2). A functional model runs its layers in
    order, without the device scopes that were active while it was built, so placement has to
    travel with the layer: ``device`` is part of the config and wraps both ``build`` (the
    variables live on the device, also when Keras builds a loaded layer without calling it) and
    every call (the ops run there). ``device=None`` leaves placement to TensorFlow. Soft
    placement applies: a saved model that names ``/GPU:1`` still loads and runs on a machine
    without one (`alexnet_tf.network.model.place_towers` moves a network to other devices).
    """

    def __init__(self, *args: Any, device: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = device

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._placement():
            return super().__call__(*args, **kwargs)

    def build(self, input_shape: Any) -> None:
        # Also outside a call: Keras builds a deserialised layer from its saved build config.
        with self._placement():
            super().build(input_shape)

    def _placement(self) -> contextlib.AbstractContextManager:
        # Not tf.device(None): that would clear an enclosing scope (a replica's device).
        return contextlib.nullcontext() if self.device is None else tf.device(self.device)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["device"] = self.device
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TowerConv2D(DevicePlacement, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with an optional ``device`` (see `DevicePlacement`)."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TowerMaxPooling2D(DevicePlacement, keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` with an optional ``device`` (see `DevicePlacement`)."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LocalResponseNormalization(DevicePlacement, keras.layers.Layer):
    """Local response normalisation across channels, exactly as in §3.3 of the paper.

    ``b[..., i] = a[..., i] / (k + alpha * sum(a[..., j] ** 2 for j in window(i))) ** beta``

    where ``window(i)`` is the ``size`` channels centred on ``i``, clipped at the first and
    last channel (the paper's ``max(0, i - n/2) .. min(N - 1, i + n/2)``). With the paper's
    ``variant`` ``alpha`` multiplies the plain sum. ``variant="caffe"`` is the named variant of
    Caffe's LRN layer (and PyTorch's ``LocalResponseNorm``), which divides ``alpha`` by ``size``
    first (``alpha / size * sum(...)``; the window is still clipped, the divisor still ``size``):
    with ``k=1`` it is what Caffe's ``bvlc_alexnet`` computes, so weights imported from it
    (`alexnet_tf.pretrained`) give Caffe's outputs. Channels-last inputs.

    Args:
        size: n, the number of adjacent channels summed over (odd). Paper: 5.
        k: additive constant. Paper: 2 (Caffe's bvlc_alexnet: 1).
        alpha: scale of the sum of squares. Paper: 1e-4.
        beta: exponent. Paper: 0.75.
        variant: one of `LRN_VARIANTS`: "paper" (§3.3) or "caffe" (``alpha`` divided by ``size``).
        device: optional device for build and call (see `DevicePlacement`).

    Reference:
        Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
        Neural Networks", NIPS 2012, §3.3.
    """

    def __init__(
        self,
        size: int = paper.LRN_N,
        k: float = paper.LRN_K,
        alpha: float = paper.LRN_ALPHA,
        beta: float = paper.LRN_BETA,
        variant: str = LRN_PAPER,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise invalid("size", size, "a positive odd integer")
        for arg, value in (("k", k), ("alpha", alpha), ("beta", beta)):
            if value < 0:
                raise invalid(arg, value, ">= 0")
        if variant not in LRN_VARIANTS:
            raise invalid("variant", variant, f"one of {', '.join(LRN_VARIANTS)}")
        self.size = size
        self.k = float(k)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.variant = variant

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        # TF's LRN kernels exist for float32 and float16 only; bfloat16 goes through float32.
        x = inputs if inputs.dtype in (tf.float32, tf.float16) else tf.cast(inputs, tf.float32)
        alpha = self.alpha / self.size if self.variant == LRN_CAFFE else self.alpha
        outputs = tf.nn.local_response_normalization(
            x, depth_radius=self.size // 2, bias=self.k, alpha=alpha, beta=self.beta
        )
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"size": self.size, "k": self.k, "alpha": self.alpha, "beta": self.beta, "variant": self.variant})
        return config


# --- ViewNormalization ---------------------------------------------------------------------

# The features the layer reads, as the pipeline names them.
IMAGE, OFFSET, FLIP, LIGHTING = "image", "offset", "flip", "lighting"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ViewNormalization(keras.layers.Layer):
    """Mirrors, casts, subtracts the mean and adds the lighting of a batch of uint8 views.

    The float end of the input pipeline, placed first in the training model: with
    ``InputConfig(normalize_in_model=True)`` the `tf.data` pipeline stops at the uint8 crop and
    yields each view's parameters beside it, and this layer does the rest of §4.1 and §2 on
    whatever device runs the model. Inputs (a dict, keys `IMAGE`, `OFFSET`, `FLIP`, `LIGHTING`):

    * ``image``: uint8 ``[..., crop, crop, 3]``, the crop at ``offset``, not yet mirrored;
    * ``offset``: int32 ``[..., 2]``, the crop's top-left corner (y, x) in the 256×256 image;
    * ``flip``: bool ``[...]``, mirror the view left-right;
    * ``lighting``: float32 ``[..., 3]``, §4.1's PCA lighting offset (RGB, 0–255 scale) to add.

    Output: ``mirror(float32(image) - mean_window(offset) + lighting)`` in the layer's compute
    dtype: the same numbers as the pipeline's float views for the same view. The mean (the
    paper's mean image, whose window at the crop's offset is subtracted; one mean per channel; or
    nothing) is a non-trainable weight set from the dataset's metadata, so it is saved with the
    model and export serves with it.

    Why: on a CPU host the float work and the per-record random draws cost 30–35% of the
    pipeline's CPU per image, and float32 crops are four times the bytes of uint8 ones; on an
    accelerator the same work, once per batch, is a few elementwise passes (the layout of GPU
    loaders such as DALI, and Keras' advice for preprocessing when training on a GPU).

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
            raise invalid("mean", mean, f"one of {', '.join(MEAN_MODES)}")
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
            raise InputError("set_mean: this layer has mean='none', no mean to set")
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


def network_of(model: keras.Model) -> keras.Model:
    """The network inside a model on views (`with_view_normalization`, what `fit` saves), or
    ``model`` itself."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[-1] if nested else model


def with_view_normalization(model: keras.Model, normalization: ViewNormalization) -> keras.Model:
    """``model`` behind ``normalization``: a model that takes the pipeline's uint8 views.

    ``model`` must take float images of side ``crop_size``; the result shares its layers and
    weights, so training it trains ``model``.
    """
    inputs = view_inputs(model.input_shape[1])
    return keras.Model(inputs, model(normalization(inputs)), name=f"{model.name}_on_views")
