"""How many pixels decoding an encoded image will allocate, read from its header in graph ops.

The serving graph (`alexnet_tf.serving.serving_model`) refuses an image over a pixel limit *before* decoding
it: a few hundred bytes of PNG, or a few hundred kilobytes of GIF, can claim billions of pixels,
and TF Serving runs every model in one process. `decoded_pixels` reads what the decoder will
allocate without decoding anything:

* JPEG: `tf.image.extract_jpeg_shape` (libjpeg reads the header only);
* PNG: width and height in the IHDR chunk, bytes 16–23, big-endian;
* BMP: width and height at bytes 18–25, little-endian signed, as TF's BMP decoder reads them
  (which also refuses a file that does not hold every pixel, so a BMP cannot be a bomb);
* GIF: TF's decoder (giflib's ``DGifSlurp``) reads *every* frame, each as large as its own image
  descriptor says, and returns a canvas as large as the largest frame, whatever the screen size
  in the header: a 16×16 screen with a 10000×10000 frame decodes to 10000×10000 (measured with
  TF 2.21). So the blocks are walked (a `tf.while_loop` over the sub-block lengths, about one
  iteration per 255 bytes) and the count is the larger of the canvas (screen and every frame's
  extent) and the sum of the frames' areas.

Everything is int64, so no header value can overflow the count. A header cut short reads as
zeros; an unknown format counts 0 pixels (the caller refuses it by its first bytes,
`has_known_format`).
"""

from __future__ import annotations

import tensorflow as tf

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG"
GIF_MAGIC = b"GIF8"
BMP_MAGIC = b"BM"
# The formats `tf.io.decode_image` reads, by their first bytes.
MAGIC_BYTES = (JPEG_MAGIC, PNG_MAGIC, GIF_MAGIC, BMP_MAGIC)

_HEADER_BYTES = 32  # enough for PNG's IHDR and BMP's size fields

# GIF block introducers (GIF89a specification).
_GIF_EXTENSION = 0x21
_GIF_IMAGE = 0x2C


def has_known_format(data: tf.Tensor) -> tf.Tensor:
    """Whether the encoded image ``data`` (a string scalar) starts like a JPEG, PNG, GIF or BMP."""
    return tf.reduce_any([_starts_with(data, magic) for magic in MAGIC_BYTES])


def decoded_pixels(data: tf.Tensor) -> tf.Tensor:
    """The pixels (int64 scalar) that decoding ``data`` allocates, from its header; 0 for an
    unknown format."""
    return tf.case(
        [
            (_starts_with(data, JPEG_MAGIC), lambda: _jpeg_pixels(data)),
            (_starts_with(data, PNG_MAGIC), lambda: _png_pixels(data)),
            (_starts_with(data, GIF_MAGIC), lambda: _gif_pixels(data)),
            (_starts_with(data, BMP_MAGIC), lambda: _bmp_pixels(data)),
        ],
        default=lambda: tf.constant(0, tf.int64),
    )


def _starts_with(data: tf.Tensor, magic: bytes) -> tf.Tensor:
    return tf.equal(tf.strings.substr(data, 0, len(magic)), magic)


def _jpeg_pixels(data: tf.Tensor) -> tf.Tensor:
    shape = tf.image.extract_jpeg_shape(data, output_type=tf.int64)
    return shape[0] * shape[1]


def _header(data: tf.Tensor) -> tf.Tensor:
    """The first `_HEADER_BYTES` bytes as int64 values, zeros past the end of ``data``."""
    head = tf.strings.substr(data, 0, _HEADER_BYTES)
    padded = tf.strings.substr(tf.strings.join([head, b"\0" * _HEADER_BYTES]), 0, _HEADER_BYTES)
    return tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)


def _number(values: tf.Tensor, start: int, length: int, big_endian: bool = False) -> tf.Tensor:
    """The unsigned integer in ``values[start : start + length]`` (int64 bytes)."""
    digits = values[start : start + length]
    if big_endian:
        digits = tf.reverse(digits, [0])
    return tf.reduce_sum(digits * tf.constant([256**i for i in range(length)], tf.int64))


def _png_pixels(data: tf.Tensor) -> tf.Tensor:
    header = _header(data)
    return _number(header, 16, 4, big_endian=True) * _number(header, 20, 4, big_endian=True)


def _bmp_pixels(data: tf.Tensor) -> tf.Tensor:
    header = _header(data)

    def signed_size(start: int) -> tf.Tensor:
        value = _number(header, start, 4)
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    return signed_size(18) * signed_size(22)


def _gif_pixels(data: tf.Tensor) -> tf.Tensor:
    """Walks the GIF's blocks: the screen, then each image descriptor's frame, to the trailer."""
    values = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int64)
    size = tf.size(values, out_type=tf.int64)
    # Reads a little past the end see zeros: a zero-length sub-block, which ends a block.
    values = tf.concat([values, tf.zeros([16], tf.int64)], 0)

    def u16(position: tf.Tensor) -> tf.Tensor:
        return values[position] + 256 * values[position + 1]

    def color_table(flags: tf.Tensor) -> tf.Tensor:
        """Bytes of the colour table that a screen's or image descriptor's flags announce."""
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0)

    def past_sub_blocks(position: tf.Tensor) -> tf.Tensor:
        """The position after the sub-blocks at ``position`` (length byte, data; length 0 ends)."""
        position = tf.while_loop(
            lambda p: (p < size) & (values[tf.minimum(p, size)] > 0),
            lambda p: p + values[p] + 1,
            (position,),
        )[0]
        return position + 1

    def block(position, width, height, frames):
        # An image descriptor (introducer, left, top, width, height, flags, its colour table,
        # the LZW code size, then sub-blocks), an extension (introducer, label, sub-blocks), or
        # the trailer (or anything else): stop.
        introducer = values[position]
        image = tf.equal(introducer, _GIF_IMAGE)
        extension = tf.equal(introducer, _GIF_EXTENSION)
        left, top, frame_width, frame_height = (u16(position + offset) for offset in (1, 3, 5, 7))
        after_image = position + 11 + color_table(values[position + 9])
        data_start = tf.where(image, after_image, tf.where(extension, position + 2, size))
        return (
            past_sub_blocks(tf.minimum(data_start, size)),
            tf.where(image, tf.maximum(width, left + frame_width), width),
            tf.where(image, tf.maximum(height, top + frame_height), height),
            tf.where(image, frames + frame_width * frame_height, frames),
        )

    start = 13 + color_table(values[10])
    _, width, height, frames = tf.while_loop(
        lambda position, *_: position < size, block, (start, u16(6), u16(8), tf.constant(0, tf.int64))
    )
    return tf.maximum(width * height, frames)
