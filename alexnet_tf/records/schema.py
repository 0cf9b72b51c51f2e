"""The TFRecord schema shared by the writer (prepare-data) and the reader (input pipeline).

Records are `tf.train.Example` protos with the TF Model Garden / TF-Slim ImageNet keys, so
records written here are read by those tools and theirs by ours. Shards are named as Model
Garden names them: ``train-00000-of-01024``, ``validation-00000-of-00128``.

Two schemas are read (the metadata's ``schema`` says which; ``alexnet-tf index-records`` detects
it): `MODEL_GARDEN` (the keys below; what prepare-data writes) and `TFDS` (TensorFlow Datasets'
``image`` + ``label``, e.g. ``imagenet2012``). `parse_example` returns both under the Model
Garden keys, so everything after parsing is schema-agnostic.

Label convention: ``image/class/label`` holds ``class_index + label_offset``. alexnet-tf writes
``label_offset=0`` by default (sorted wnids 0..N-1, as Caffe, TFDS, torchvision and Keras do);
Model Garden and TF-Slim write ``label_offset=1`` (1..N, 0 reserved for "background"). The
offset used is stored in the dataset metadata and the input pipeline subtracts it.
"""

from __future__ import annotations

import tensorflow as tf

# The split names belong to this contract; they are defined in the import-free `alexnet_tf.constants`
# so that the command line shows them as defaults without loading TensorFlow.
from alexnet_tf.constants import SPLITS as SPLITS
from alexnet_tf.constants import TRAIN as TRAIN
from alexnet_tf.constants import VALIDATION as VALIDATION

ENCODED = "image/encoded"
FORMAT = "image/format"
COLORSPACE = "image/colorspace"
CHANNELS = "image/channels"
HEIGHT = "image/height"
WIDTH = "image/width"
LABEL = "image/class/label"
SYNSET = "image/class/synset"
TEXT = "image/class/text"
FILENAME = "image/filename"

MODEL_GARDEN = "model_garden"  # also TF-Slim's build_imagenet_data.py
TFDS = "tfds"
SCHEMAS = (MODEL_GARDEN, TFDS)
TFDS_IMAGE = "image"  # TFDS `Image` feature: the encoded bytes
TFDS_LABEL = "label"  # TFDS `ClassLabel` feature: 0-based int64

# Everything the reader needs; the rest of the record is informational and parsed on demand.
FEATURE_SPEC = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
}
FULL_FEATURE_SPEC = {
    **FEATURE_SPEC,
    FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    COLORSPACE: tf.io.FixedLenFeature([], tf.string, default_value=""),
    CHANNELS: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    SYNSET: tf.io.FixedLenFeature([], tf.string, default_value=""),
    TEXT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
}
TFDS_FEATURE_SPEC = {
    TFDS_IMAGE: tf.io.FixedLenFeature([], tf.string),
    TFDS_LABEL: tf.io.FixedLenFeature([], tf.int64),
}


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def serialize_example(
    *,
    encoded: bytes,
    height: int,
    width: int,
    label: int,
    synset: str,
    text: str,
    filename: str,
) -> bytes:
    """One RGB JPEG image as a serialized `tf.train.Example` in the Model Garden schema."""
    feature = {
        ENCODED: _bytes(encoded),
        FORMAT: _bytes(b"JPEG"),
        COLORSPACE: _bytes(b"RGB"),
        CHANNELS: _int64(3),
        HEIGHT: _int64(height),
        WIDTH: _int64(width),
        LABEL: _int64(label),
        SYNSET: _bytes(synset.encode("utf-8")),
        TEXT: _bytes(text.encode("utf-8")),
        FILENAME: _bytes(filename.encode("utf-8")),
    }
    # deterministic=True sorts the feature map, so the same image gives the same bytes in every
    # process (map order otherwise follows the per-process string hash seed).
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def parse_example(serialized: tf.Tensor, full: bool = False, record_schema: str = MODEL_GARDEN) -> dict[str, tf.Tensor]:
    """Parses one serialized record; ``full=True`` also returns the informational keys.

    Whatever ``record_schema``, the image bytes and label come back under `ENCODED` and `LABEL`
    (a TFDS record has no informational keys).
    """
    if record_schema == TFDS:
        parsed = tf.io.parse_single_example(serialized, TFDS_FEATURE_SPEC)
        return {ENCODED: parsed[TFDS_IMAGE], LABEL: parsed[TFDS_LABEL]}
    return tf.io.parse_single_example(serialized, FULL_FEATURE_SPEC if full else FEATURE_SPEC)


def detect_schema(keys: set[str]) -> str | None:
    """The schema whose image and label keys a record with feature ``keys`` has (None: unknown)."""
    if {ENCODED, LABEL} <= keys:
        return MODEL_GARDEN
    if {TFDS_IMAGE, TFDS_LABEL} <= keys:
        return TFDS
    return None


def shard_name(split: str, index: int, num_shards: int) -> str:
    """Model Garden shard name, e.g. ``shard_name("train", 3, 1024) == "train-00003-of-01024"``."""
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def shard_glob(split: str) -> str:
    """Glob matching every shard of ``split``."""
    return f"{split}-?????-of-?????"
