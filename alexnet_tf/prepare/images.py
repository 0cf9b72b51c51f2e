"""Robust decoding of source images and the paper's 256×256 RGB JPEGs (§2).

§2: "we down-sampled the images to a fixed resolution of 256 × 256. Given a rectangular image,
we first rescaled the image such that the shorter side was of length 256, and then cropped out
the central 256×256 patch". `prepare_image` does exactly that with Pillow and re-encodes the
result as an RGB JPEG; with ``keep_geometry`` it keeps the original size instead.

Everything here works on bytes (read by the caller through `tf.io.gfile`, so ``gs://`` works)
and never on paths. Untrusted bytes never raise anything but `BadImage`, whose message is the
reason the file is skipped; the ImageNet quirks are handled by content, not by file name:

- CMYK JPEGs (22 in ILSVRC-2012 train), grayscale, palette, alpha and 16-bit grayscale images
  are converted to RGB (alpha is dropped); a PNG named ``.JPEG`` (one in train) is decoded as the
  PNG it is. 32-bit integer and float images (mode I, F) are refused: they have no 8-bit scale.
- Empty, truncated, corrupt and non-image files are refused (Pillow's truncated-image check
  stays on: a partial image would silently train on grey padding).
- Decompression bombs: an image whose header claims more than ``max_pixels`` pixels is refused
  before any pixel is decoded (`pixel_limit` lets Pillow's own check allow a higher limit).

Speed: for a JPEG at least twice the target size, `PIL.Image.Image.draft` asks libjpeg to
decode at 1/2, 1/4 or 1/8 scale (the largest reduction that keeps the shorter side ≥ 256),
which skips most of the inverse DCT work; the antialiased resize then starts from a smaller
image. The crop is folded into the resize (``box=``), so only the 256×256 output pixels are
computed. EXIF orientation is not applied, like `tf.io.decode_jpeg` and the TF tools.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from alexnet_tf import paper
from alexnet_tf.constants import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS

# Pillow's default resize filter; antialiased when downsampling.
RESAMPLE = Image.Resampling.BICUBIC


class BadImage(Exception):
    """A file that cannot become a training image; the message is the reason it is skipped."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How source images become stored images.

    Attributes:
        image_size: side of the stored square image (§2: 256).
        keep_geometry: store the whole image at its original size instead of the §2 crop;
            RGB JPEGs are then stored byte for byte, everything else re-encoded as RGB JPEG.
        jpeg_quality: Pillow JPEG quality (1–95) for every re-encoded image.
        max_pixels: refuse images whose header claims more pixels than this.
    """

    image_size: int = paper.IMAGE_SIZE
    keep_geometry: bool = False
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """A stored image: RGB JPEG bytes, their size, and optionally the pixels for statistics.

    ``stats_image`` (RGB, ``image_size × image_size``) holds the pixels that were JPEG-encoded
    (with ``keep_geometry``, the §2 centre crop of the decoded source). The statistics are
    computed from these rather than from the stored JPEG decoded again: a second decode of every
    training image cost about a tenth of prepare-data's time, and JPEG's quantisation error
    (a grey level or so at quality 90) changes the mean image and the PCA by far less
    than any use of them can notice.
    """

    encoded: bytes
    height: int
    width: int
    stats_image: Image.Image | None


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Lets Pillow open images up to ``max_pixels`` (and silences Pillow's warnings).

    Pillow refuses images above twice its global `PIL.Image.MAX_IMAGE_PIXELS`; this raises that
    limit when ``max_pixels`` is higher (never lowers it: `prepare_image` applies lower limits
    itself, and our own 256×256 images must stay readable). Restored on exit.
    """
    previous = Image.MAX_IMAGE_PIXELS
    if previous is not None:
        Image.MAX_IMAGE_PIXELS = max(previous, max_pixels)
    try:
        with warnings.catch_warnings():
            # EXIF/palette/size warnings on odd files would break the progress bar; a bad file
            # is reported through BadImage instead.
            warnings.filterwarnings("ignore", module=r"PIL\.")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def prepare_image(data: bytes, options: ImageOptions, *, for_stats: bool = False) -> PreparedImage:
    """Turns a source file's bytes into a stored RGB JPEG; raises `BadImage` with the reason.

    ``for_stats`` also returns the §2 256×256 pixels that were encoded, for the statistics.
    """
    image = _open(data, options.max_pixels)
    if options.keep_geometry:
        rgb, _ = _decode_rgb(image, draft_to=None)
        # An RGB JPEG keeps its bytes (no second loss); anything else is re-encoded.
        keep = image.format == "JPEG" and image.mode == "RGB"
        encoded = data if keep else encode_jpeg(rgb, options.jpeg_quality)
        stats_image = center_crop(rgb, options.image_size) if for_stats else None
        return PreparedImage(encoded, rgb.height, rgb.width, stats_image)
    rgb = _square(image, options.image_size)
    return PreparedImage(
        encode_jpeg(rgb, options.jpeg_quality), options.image_size, options.image_size, rgb if for_stats else None
    )


def square_image(data: bytes, options: ImageOptions) -> Image.Image:
    """§2's ``image_size``² RGB crop of an image's bytes, as `prepare_image` stores it; raises
    `BadImage` with the reason. What index-records computes the statistics of existing records over.
    """
    return _square(_open(data, options.max_pixels), options.image_size)


def _square(image: Image.Image, size: int) -> Image.Image:
    rgb, covered = _decode_rgb(image, draft_to=size)
    return center_crop(rgb, size, covered)


def center_crop(image: Image.Image, size: int, covered: tuple[float, float] | None = None) -> Image.Image:
    """§2: rescale so the shorter side is ``size``, then take the central ``size × size`` patch.

    Done as one resize of the central square (a float box in source pixels), which equals
    rescale-then-crop without computing the pixels the crop throws away. Images smaller than
    ``size`` are enlarged, as §2's "rescaled" implies. ``covered`` is the area of the source
    the pixels cover when a JPEG draft decode rounded the image size up (see `_draft`).
    """
    width, height = covered or image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    if image.size == (size, size) and side == size:
        return image
    return image.resize((size, size), RESAMPLE, box=(left, top, left + side, top + side))


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """RGB JPEG bytes (Pillow's default 4:2:0 chroma subsampling, no metadata copied)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Opens the image header, refusing empty, non-image and oversized files."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage("not an image (Pillow cannot identify its format)") from None
    except Image.DecompressionBombError as error:
        raise BadImage(f"decompression bomb refused: {error}") from None
    except Exception as error:  # noqa: BLE001 - untrusted bytes: any error means a bad header
        raise BadImage(f"corrupt image header ({_describe(error)})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise BadImage(
            f"decompression bomb refused: {width}x{height} = {width * height:,} pixels > max_pixels {max_pixels:,}"
        )
    return image


def _decode_rgb(image: Image.Image, draft_to: int | None) -> tuple[Image.Image, tuple[float, float] | None]:
    """Decodes all pixels (optionally at a JPEG draft scale) and converts them to RGB.

    Returns the RGB image and, after a draft decode, the source area it covers.
    """
    covered = None
    try:
        if draft_to is not None and image.format == "JPEG":
            covered = _draft(image, draft_to)
        image.load()
        rgb = _to_rgb(image)
    except BadImage:
        raise
    except Exception as error:  # noqa: BLE001 - truncated/corrupt data or an unconvertible mode
        raise BadImage(f"corrupt, truncated or unsupported image data ({_describe(error)})") from None
    return rgb, covered


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any 8-bit mode (CMYK, L, P, LA, RGBA, 1 …) and from 16-bit grayscale."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):  # Pillow would clip 16-bit values to 255, not scale them
        image = Image.fromarray((np.asarray(image, np.uint16) >> 8).astype(np.uint8))
    elif image.mode in ("I", "F"):  # 32-bit integer or float pixels: no agreed 8-bit scale
        raise BadImage(f"unsupported pixel format (Pillow mode {image.mode})")
    return image.convert("RGB")


def _draft(image: Image.Image, target: int) -> tuple[float, float] | None:
    """Lets libjpeg decode at 1/2, 1/4 or 1/8 scale while the shorter side stays ≥ ``target``.

    Returns the source area the decoded pixels cover, in decoded pixels (width, height): the
    decoded size is rounded up, so the last row/column may cover only part of a pixel. None
    when no reduction applies.
    """
    width, height = image.size
    shorter = min(width, height)
    if shorter < 2 * target:
        return None
    # draft() picks the largest scale keeping both sides >= the requested size.
    request = (math.ceil(width * target / shorter), math.ceil(height * target / shorter))
    result = image.draft(image.mode, request)
    if result is None:  # a file draft() declines (e.g. several tiles); decode at full size
        return None
    _, box = result
    return box[2], box[3]


def _describe(error: Exception) -> str:
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
