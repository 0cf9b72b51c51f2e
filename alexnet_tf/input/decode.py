"""`RecordDecoder`: records (Model Garden or TFDS schema, as the metadata says) to labels and uint8 images.

The decoding half of the input pipeline, as Model Garden separates its Decoder from its Parser:
it knows the schema, the label offset and the stored geometry, and nothing about augmentation.
`alexnet_tf.input.views` makes the views from what it decodes. Every image is checked before it
is decoded (`alexnet_tf.input.bad_records.guarded`): a JPEG of the declared size, or the record
is named in the error.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.input import augment, bad_records
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import DatasetMetadata

LABEL = "label"  # the parsed features' 0-based class index


class RecordDecoder:
    """Parses records and decodes their JPEGs to §2's square images.

    Args:
      metadata: the dataset's metadata (its ``schema``, ``image_size`` and ``label_offset``).
      label_offset: subtracted from ``image/class/label``; None takes the metadata's, giving
        0-based class indices whatever convention the records were written with.
    """

    def __init__(self, metadata: DatasetMetadata, label_offset: int | None = None) -> None:
        # Records that kept their original geometry (image_size None) are brought to §2's
        # 256×256 on the fly, at the cost of decoding them whole.
        self.image_size = metadata.image_size or paper.IMAGE_SIZE
        self.resize_records = metadata.image_size is None
        self.declared_size = metadata.image_size
        self.most_pixels = bad_records.max_pixels(metadata)
        self.label_offset = metadata.label_offset if label_offset is None else label_offset
        self.schema = metadata.schema

    def parse(self, serialized: tf.Tensor, where: tuple[tf.Tensor, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
        """The record's features under the Model Garden keys, with `LABEL` as an int32 class index
        (offset subtracted), and ``where`` (its shard and number there, as
        `alexnet_tf.input.bad_records.RecordReader` gives them) to name it if it is bad."""
        features = schema.parse_example(serialized, record_schema=self.schema)
        features[LABEL] = tf.cast(features[schema.LABEL], tf.int32) - self.label_offset
        if where is not None:
            features[bad_records.PATH], features[bad_records.INDEX] = where
        return features

    def checked(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """The record's JPEG bytes once its header passes `bad_records.guarded`."""
        return bad_records.guarded(features, self.declared_size, self.most_pixels)

    def decode(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """The whole record as a uint8 ``[256, 256, 3]`` image (§2 applied if it is another size)."""
        image = tf.io.decode_jpeg(self.checked(features), channels=3)
        if not self.resize_records:
            return tf.ensure_shape(image, [self.image_size, self.image_size, 3])
        shape = tf.shape(image)
        fits = (shape[0] == self.image_size) & (shape[1] == self.image_size)
        image = tf.cond(fits, lambda: image, lambda: augment.resize_and_center_crop(image, self.image_size))
        return tf.ensure_shape(image, [self.image_size, self.image_size, 3])

    def decode_window(self, features: dict[str, tf.Tensor], offset: tf.Tensor, size: int) -> tf.Tensor:
        """The uint8 ``size``² window at ``offset`` of the (256×256) image.

        Records of a 256×256 dataset decode only that window (``decode_and_crop_jpeg``). It
        matches decoding everything and slicing, except that the window's first and last
        columns can differ by a few levels: the decoder's chroma upsampling sees the crop edge
        instead of the neighbouring pixels. Other records are decoded whole (`decode`).
        """
        if self.resize_records:
            window = augment.crop_window(self.decode(features), offset, size)
        else:
            corner_and_size = tf.concat([offset, [size, size]], axis=0)
            window = tf.io.decode_and_crop_jpeg(self.checked(features), corner_and_size, channels=3)
        return tf.ensure_shape(window, [size, size, 3])
