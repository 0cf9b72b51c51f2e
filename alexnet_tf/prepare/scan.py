"""Reading one existing shard for index-records: its labels, class names, geometry and statistics.

`scan_shard` is the unit of work (one task per shard, run on `alexnet_tf.prepare.workers`
processes) and of resume. It only reads the shard. Records are parsed with the protobuf
library, not TensorFlow ops (a per-record ``parse_single_example`` costs more than the parse);
each image's header gives its size and format; the training records chosen for the statistics
are decoded with Pillow, brought to §2's 256×256 crop exactly as prepare-data does
(`alexnet_tf.prepare.images.square_image`) and summed exactly (`PixelStats`).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import posixpath
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from PIL import Image

from alexnet_tf import paper
from alexnet_tf.errors import InputError
from alexnet_tf.prepare import images
from alexnet_tf.prepare.stats import PixelStats
from alexnet_tf.records import schema

# Bytes a TFRecord adds around each record (length, its CRC, the data's CRC): progress is in
# file bytes, so the bar's total is the shards' size.
RECORD_FRAMING = 16


@dataclasses.dataclass(frozen=True)
class ScanContext:
    """What every scan task shares (sent to each worker once)."""

    directory: str
    record_schema: str
    max_pixels: int = images.DEFAULT_MAX_PIXELS


@dataclasses.dataclass(frozen=True)
class ScanTask:
    name: str
    split: str
    stats_records: int | None  # the first this many records count in the statistics; None: all


@dataclasses.dataclass
class ScanResult:
    name: str
    records: int
    labels: dict[int, int]  # label as stored -> records
    synsets: dict[int, tuple[str, str]]  # label -> (synset, text), from records that carry them
    all_square: bool  # every image is paper.IMAGE_SIZE × paper.IMAGE_SIZE
    stats: PixelStats | None  # None when no record of the shard counts in the statistics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the statistics (the checkpoint keeps their merged sums)."""
        return {
            "name": self.name,
            "records": self.records,
            "labels": {str(k): v for k, v in self.labels.items()},
            "synsets": {str(k): list(v) for k, v in self.synsets.items()},
            "all_square": self.all_square,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScanResult:
        return cls(
            name=raw["name"],
            records=raw["records"],
            labels={int(k): v for k, v in raw["labels"].items()},
            synsets={int(k): (v[0], v[1]) for k, v in raw["synsets"].items()},
            all_square=raw["all_square"],
            stats=None,
        )


def scan_shard(context: ScanContext, task: ScanTask, progress: Callable[[int], None]) -> ScanResult:
    """Reads every record of the shard; `InputError` naming the shard and record if one is bad."""
    path = posixpath.join(context.directory, task.name)
    wanted = task.stats_records
    stats = PixelStats(paper.IMAGE_SIZE) if wanted is None or wanted > 0 else None
    labels: collections.Counter[int] = collections.Counter()
    synsets: dict[int, tuple[str, str]] = {}
    all_square = True
    options = images.ImageOptions(max_pixels=context.max_pixels)
    index = -1
    with images.pixel_limit(context.max_pixels):
        try:
            for index, serialized in enumerate(_records(path)):
                where = f"{path}: record {index}"
                encoded, label, named = _fields(serialized, context.record_schema, where)
                labels[label] += 1
                if named is not None and synsets.setdefault(label, named) != named:
                    raise InputError(
                        f"{where}: label {label} is {named[0]!r} here but {synsets[label][0]!r} in an earlier "
                        "record; the records disagree on what the label means"
                    )
                all_square &= _size(encoded, where) == (paper.IMAGE_SIZE, paper.IMAGE_SIZE)
                if stats is not None and (wanted is None or index < wanted):
                    try:
                        stats.add(images.square_image(encoded, options))
                    except images.BadImage as error:
                        raise InputError(f"{where}: {error}; the input pipeline could not decode it either") from None
                progress(len(serialized) + RECORD_FRAMING)
        except tf.errors.DataLossError as error:
            raise InputError(
                f"{path}: truncated or corrupt after record {index} ({error.message.splitlines()[0]}); "
                "replace the shard with a complete copy"
            ) from None
    return ScanResult(
        task.name, sum(labels.values()), dict(labels), synsets, all_square, stats if stats and stats.images else None
    )


def _records(path: str):
    for record in tf.data.TFRecordDataset(path):
        yield record.numpy()


def _fields(serialized: bytes, record_schema: str, where: str) -> tuple[bytes, int, tuple[str, str] | None]:
    """The image bytes, the stored label and, for Model Garden records with a synset, (synset, text)."""
    try:
        feature = tf.train.Example.FromString(serialized).features.feature
    except Exception as error:  # noqa: BLE001 - any protobuf decode error means "not an Example"
        raise InputError(f"{where}: not a tf.train.Example ({type(error).__name__})") from None
    image_key, label_key = (
        (schema.TFDS_IMAGE, schema.TFDS_LABEL) if record_schema == schema.TFDS else (schema.ENCODED, schema.LABEL)
    )
    encoded, label = feature[image_key].bytes_list.value, feature[label_key].int64_list.value
    if len(encoded) != 1 or len(label) != 1:
        raise InputError(f"{where}: expected one {image_key} and one {label_key}; the shards mix schemas?")
    named = None
    if record_schema == schema.MODEL_GARDEN and feature[schema.SYNSET].bytes_list.value:
        synset = feature[schema.SYNSET].bytes_list.value[0].decode("utf-8")
        text = feature[schema.TEXT].bytes_list.value
        named = (synset, text[0].decode("utf-8") if text else "")
    return encoded[0], label[0], named


def _size(encoded: bytes, where: str) -> tuple[int, int]:
    """The image's (width, height) from its header; JPEG only, as the input pipeline decodes JPEG."""
    try:
        image = Image.open(io.BytesIO(encoded))
    except Exception as error:  # noqa: BLE001 - untrusted bytes
        raise InputError(f"{where}: not an image ({type(error).__name__}); the input pipeline cannot read it") from None
    if image.format != "JPEG":
        raise InputError(f"{where}: a {image.format} image; alexnet-tf reads JPEG records only")
    return image.size
