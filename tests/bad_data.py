"""Damaged records for the fault tests: bad images inside records, truncated and garbled shards."""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from alexnet_tf.records import schema


def jpeg(side: int) -> bytes:
    """A ``side``² JPEG (one colour: small even when large)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 150)).save(buffer, "JPEG")
    return buffer.getvalue()


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "GIF")
    return buffer.getvalue()


def garbage() -> bytes:
    return np.random.default_rng(0).bytes(3000)


def bomb_header(side: int) -> bytes:
    """A small JPEG whose header says it is ``side``²: decoding it whole would allocate side²·3 bytes."""
    data = bytearray(jpeg(16))
    frame = data.index(b"\xff\xc0")  # baseline SOF: length (2), precision (1), height (2), width (2)
    data[frame + 5 : frame + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


def truncated_jpeg(side: int) -> bytes:
    """A ``side``² JPEG of noise cut short: its header is sound, its data ends early."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()[:2000]


def replace_image(shard: str, index: int, encoded: bytes) -> None:
    """Rewrites ``shard`` with record ``index``'s image bytes replaced by ``encoded``."""
    records = [record.numpy() for record in tf.data.TFRecordDataset(shard)]
    example = tf.train.Example.FromString(records[index])
    example.features.feature[schema.ENCODED].bytes_list.value[0] = encoded
    records[index] = example.SerializeToString()
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records:
            writer.write(record)


# Where the damage goes in a shard: in its third record of four records of about the same size.
DAMAGED_AT = 5 / 8


def truncate(shard: str) -> None:
    """Cuts ``shard`` at `DAMAGED_AT` of its length, as an interrupted copy leaves it."""
    with open(shard, "rb") as f:
        data = f.read()
    with open(shard, "wb") as f:
        f.write(data[: int(len(data) * DAMAGED_AT)])


def garble(shard: str) -> None:
    """Zeroes 64 bytes at `DAMAGED_AT` of ``shard``, as a bad disk block does (the record's CRC fails)."""
    with open(shard, "r+b") as f:
        f.seek(int(f.seek(0, 2) * DAMAGED_AT))
        f.write(bytes(64))
