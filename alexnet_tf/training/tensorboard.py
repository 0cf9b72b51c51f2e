"""What fit writes for TensorBoard: training and validation scalars, the first augmented inputs,
and conv1's kernels at every epoch's end that saves a checkpoint (`alexnet_tf.training.loop`),
drawn as ``alexnet-tf show-filters`` draws them (`alexnet_tf.figures.filters`, one block per tower).

Written with TensorFlow's own summary op and the plugin metadata TensorBoard reads, because
``tf.summary.scalar`` / ``tf.summary.image`` live in the ``tensorboard`` package, which is not a
dependency of training.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from alexnet_tf.figures.filters import conv1_towers, filter_sheet

# Augmented inputs drawn at the start of a run.
INPUT_IMAGES = 4


class TensorBoardWriter:
    """One run's event files in ``directory`` (local or ``gs://``)."""

    def __init__(self, directory: str) -> None:
        self._writer = tf.summary.create_file_writer(directory)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One scalar per name, at global step ``step``."""
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32), metadata=_plugin("scalars"))

    def images(self, step: int, name: str, images: tf.Tensor) -> None:
        """Float ``[n, h, w, 3]`` images in [0, 1], or uint8 ones, as the images plugin stores them."""
        if images.dtype != tf.uint8:
            images = tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255), tf.uint8)
        height, width = images.shape[1], images.shape[2]
        encoded = [tf.io.encode_png(image) for image in images]
        with self._writer.as_default(step=step):
            tensor = tf.stack([tf.as_string(width), tf.as_string(height), *encoded])
            tf.summary.write(name, tensor, metadata=_plugin("images"))

    def conv1_filters(self, step: int, network: keras.Model) -> None:
        """conv1's kernels, each min-max scaled, a block of rows per tower (Figure 3's layout)."""
        sheet = filter_sheet(conv1_towers(network))
        self.images(step, "conv1_filters", tf.constant(sheet.pixels[None]))

    def inputs(self, step: int, views: tf.Tensor) -> None:
        """A few training inputs as the network sees them, each min-max scaled for display."""
        images = tf.cast(views[:INPUT_IMAGES], tf.float32)
        low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        self.images(step, "train/inputs", (images - low) / tf.maximum(high - low, 1e-6))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _plugin(name: str) -> bytes:
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = name
    return metadata.SerializeToString()
