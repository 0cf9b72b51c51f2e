"""AlexNet's custom layers: local response normalisation and per-tower device placement.

Every class is registered with `keras.saving.register_keras_serializable`, so a ``.keras``
file that uses them loads with ``safe_mode=True`` once `alexnet_tf` is imported.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from alexnet_tf import paper

_PACKAGE = "alexnet_tf"


class DevicePlacement:
    """Mixin that builds and calls a Keras layer under ``tf.device(device)``.

    The paper trains each tower on its own GPU (§3.2). A functional model runs its layers in
    order, without the device scopes that were active while it was built, so placement has to
    travel with the layer: ``device`` is part of the config and wraps both ``build`` (the
    variables live on the device) and every call (the ops run there). ``device=None`` leaves
    placement to TensorFlow. Soft placement applies: a saved model that names ``/GPU:1`` still
    loads and runs on a machine without one.
    """

    def __init__(self, *args: Any, device: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = device

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.device is None:
            return super().__call__(*args, **kwargs)
        with tf.device(self.device):
            return super().__call__(*args, **kwargs)

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
    last channel (the paper's ``max(0, i - n/2) .. min(N - 1, i + n/2)``). ``alpha`` multiplies
    the plain sum: Caffe's and PyTorch's LRN divide it by ``size`` first, so their ``alpha``
    must be ``size`` times ours to compute the same thing. Channels-last inputs.

    Args:
        size: n, the number of adjacent channels summed over (odd). Paper: 5.
        k: additive constant. Paper: 2.
        alpha: scale of the sum of squares. Paper: 1e-4.
        beta: exponent. Paper: 0.75.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"`size` must be a positive odd integer. Received: size={size!r}")
        for arg, value in (("k", k), ("alpha", alpha), ("beta", beta)):
            if value < 0:
                raise ValueError(f"`{arg}` must be >= 0. Received: {arg}={value!r}")
        self.size = size
        self.k = float(k)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        # TF's LRN kernels exist for float32 and float16 only; bfloat16 goes through float32.
        x = inputs if inputs.dtype in (tf.float32, tf.float16) else tf.cast(inputs, tf.float32)
        outputs = tf.nn.local_response_normalization(
            x, depth_radius=self.size // 2, bias=self.k, alpha=self.alpha, beta=self.beta
        )
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"size": self.size, "k": self.k, "alpha": self.alpha, "beta": self.beta})
        return config
