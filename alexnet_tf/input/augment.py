"""The paper's data augmentation (§4.1) and test-time views as pure TensorFlow functions.

Every function works on one image (``[height, width, channels]``) or one view's parameters, so it
can be read, tested and reused on its own; `alexnet_tf.input.pipeline` maps them over records.

Randomness is stateless: each random function takes a ``seed`` (a shape-[2] integer tensor, as
the ``tf.random.stateless_*`` ops take) and returns the same value for the same seed. The
pipeline derives one seed per record from the dataset seed, so a parallel ``map`` gives the same
views whatever order its threads run in.

Two implementation choices come from measurements on TF 2.21's CPU kernels (per 224×224×3 image,
one core): adding a ``[3]`` vector to ``[h, w, 3]`` by broadcasting costs ~400 µs, while adding a
tiled ``[1, w*3]`` row costs ~40 µs (see `normalize`); and windows are sliced out of the
``[h, w*3]`` view of an image, a plain row copy (see `crop_window`). Functions that reshape need
images whose shape is known when the graph is built.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from alexnet_tf import paper

# §4.1's lighting statistics decompose the covariance of RGB values scaled to [0, 1]; the
# pipeline works on the 0–255 scale (see alexnet_tf.records.metadata.DatasetStats).
PIXEL_SCALE = 255.0


class View(NamedTuple):
    """One random training view of an image (§4.1): where to crop, whether to mirror, lighting."""

    offset: tf.Tensor  # int32 [2]: the crop's top-left corner (y, x).
    flip: tf.Tensor  # bool []: mirror left-right.
    alpha: tf.Tensor  # float32 [3]: the PCA lighting coefficients alpha_i.


def crop_offset(seed: tf.Tensor, image_size: int, crop_size: int) -> tf.Tensor:
    """A random crop corner ``[y, x]``, each uniform on ``0 .. image_size - crop_size`` inclusive.

    §4.1 extracts "random 224 × 224 patches" of the 256 × 256 images. Inclusive bounds give
    33 × 33 positions; the paper's factor of 2048 counts 32 × 32 × 2.
    """
    return tf.random.stateless_uniform([2], seed, minval=0, maxval=image_size - crop_size + 1, dtype=tf.int32)


def flip_coin(seed: tf.Tensor, shape: tuple[int, ...] | tf.Tensor = ()) -> tf.Tensor:
    """True with probability 1/2 (``shape`` independent draws): §4.1's horizontal reflections."""
    return tf.random.stateless_uniform(shape, seed) < 0.5


def lighting_alpha(
    seed: tf.Tensor, stddev: float = paper.PCA_LIGHTING_STD, shape: tuple[int, ...] | tf.Tensor = ()
) -> tf.Tensor:
    """The three alpha_i ~ N(0, stddev) of §4.1's lighting, drawn once per image per pass.

    Returns ``[*shape, 3]``: one triple per image of a batch of ``shape``.
    """
    shape = tf.cast(tf.reshape(shape, [-1]), tf.int32)
    return tf.random.stateless_normal(tf.concat([shape, [3]], axis=0), seed, stddev=stddev)


def sample_view(
    seed: tf.Tensor,
    image_size: int = paper.IMAGE_SIZE,
    crop_size: int = paper.CROP_SIZE,
    lighting_stddev: float = paper.PCA_LIGHTING_STD,
) -> View:
    """Draws one training view; crop, flip and lighting use independent seeds split from ``seed``."""
    crop_seed, flip_seed, alpha_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    return View(
        offset=crop_offset(crop_seed, image_size, crop_size),
        flip=flip_coin(flip_seed),
        alpha=lighting_alpha(alpha_seed, lighting_stddev),
    )


def pca_lighting_offset(alpha: tf.Tensor, eigenvalues: tf.Tensor, eigenvectors: tf.Tensor) -> tf.Tensor:
    """§4.1's ``[p1 p2 p3][alpha1 lambda1, alpha2 lambda2, alpha3 lambda3]^T`` on the 0–255 scale.

    Args:
      alpha: ``[..., 3]`` coefficients.
      eigenvalues: ``[3]`` eigenvalues of the RGB covariance (pixels scaled to [0, 1]).
      eigenvectors: ``[3, 3]`` with the eigenvectors p_i as columns.

    Returns:
      ``[..., 3]``: the RGB offset added to every pixel, ``255 * eigenvectors @ (alpha * eigenvalues)``.
    """
    weights = tf.cast(alpha, tf.float32) * tf.cast(eigenvalues, tf.float32)
    # A 3×3 product as multiply-and-sum: a MatMul op per record costs far more (oneDNN set-up).
    return PIXEL_SCALE * tf.reduce_sum(tf.cast(eigenvectors, tf.float32) * weights[..., tf.newaxis, :], axis=-1)


def normalize(image: tf.Tensor, mean: tf.Tensor | None = None, shift: tf.Tensor | None = None) -> tf.Tensor:
    """``float32(image) - mean + shift`` for a ``[height, width, channels]`` image.

    Args:
      image: the (uint8) image.
      mean: None, or a float32 mean of the same shape (the window of the mean image the image
        was cut from, §2).
      shift: None, or a ``[channels]`` value added to every pixel (§4.1's lighting offset,
        minus the per-channel mean when that replaces the mean image).

    ``shift`` is added as a tiled ``[1, width * channels]`` row to the ``[height, width *
    channels]`` view of the image: the same sum as broadcasting, an order of magnitude faster
    on CPU (see the module docstring).
    """
    height, width, channels = image.shape
    rows = tf.reshape(tf.cast(image, tf.float32), [height, width * channels])
    row = None if shift is None else tf.tile(tf.cast(shift, tf.float32), [width])[tf.newaxis]
    if mean is not None:
        reference = tf.reshape(mean, [height, width * channels])
        rows = rows - (reference if row is None else reference - row)
    elif row is not None:
        rows = rows + row
    return tf.reshape(rows, [height, width, channels])


def crop_window(image: tf.Tensor, offset: tf.Tensor, crop_size: int) -> tf.Tensor:
    """The ``crop_size``² window of ``[height, width, channels]`` ``image`` with corner ``offset``."""
    shape = tf.shape(image)
    channels = image.shape[-1]
    rows = tf.reshape(image, [shape[0], shape[1] * channels])
    window = tf.slice(rows, [offset[0], offset[1] * channels], [crop_size, crop_size * channels])
    return tf.reshape(window, [crop_size, crop_size, channels])


def flip_left_right(image: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """Mirrors ``[height, width, channels]`` ``image`` left-right when ``flip`` is true."""
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def center_offset(image_size: int, crop_size: int) -> tf.Tensor:
    """The corner of the central ``crop_size``² window of an ``image_size``² image."""
    margin = (image_size - crop_size) // 2
    return tf.constant([margin, margin], tf.int32)


# §4.1 test time: "the four corner patches and the center patch as well as their horizontal
# reflections (hence ten patches in all)". View k and view k + 5 are the same patch, unmirrored
# and mirrored.
TEN_CROP_NAMES = (
    "top-left", "top-right", "bottom-left", "bottom-right", "centre",
    "top-left mirrored", "top-right mirrored", "bottom-left mirrored", "bottom-right mirrored",
    "centre mirrored",
)  # fmt: skip


def ten_crop_offsets(image_size: int, crop_size: int) -> list[tuple[int, int]]:
    """Corners ``(y, x)`` of the five patches, in `TEN_CROP_NAMES` order."""
    far = image_size - crop_size
    centre = far // 2
    return [(0, 0), (0, far), (far, 0), (far, far), (centre, centre)]


def five_crop(image: tf.Tensor, crop_size: int = paper.CROP_SIZE) -> tf.Tensor:
    """The four corner patches and the centre patch, ``[5, crop_size, crop_size, channels]``."""
    image_size = image.shape[0]
    return tf.stack([crop_window(image, offset, crop_size) for offset in ten_crop_offsets(image_size, crop_size)])


def ten_crop(image: tf.Tensor, crop_size: int = paper.CROP_SIZE) -> tf.Tensor:
    """The ten test views of a square image as ``[10, crop_size, crop_size, channels]``."""
    patches = five_crop(image, crop_size)
    return tf.concat([patches, tf.reverse(patches, axis=[2])], axis=0)


def resize_and_center_crop(image: tf.Tensor, size: int = paper.IMAGE_SIZE) -> tf.Tensor:
    """§2: rescale so the shorter side is ``size``, then take the central ``size``² patch.

    For records that kept their original geometry, and for serving. Bilinear with antialiasing (a
    proper downsampling filter), as ``tf.image.resize(..., antialias=True)``; returns uint8 like a
    decoded JPEG.

    Only the central patch is computed: the input is first cut to the pixels the patch's filter
    reaches, then resampled with TF's own resize kernel (`tf.raw_ops.ScaleAndTranslate`, which
    ``tf.image.resize`` runs) at the whole image's scale, shifted to the patch. The result is the
    whole-image resize's central patch (float rounding of the shifted grid moves a few values by
    one level; tested), but the cost no longer grows with the rescaled whole image: a 1×60000
    PNG rescaled whole was 256×15,360,000 floats.
    """
    shape = tf.shape(image, out_type=tf.int64)
    shorter = tf.minimum(shape[0], shape[1])
    top, bottom, scale_y, shift_y = _central_span(shape[0], shorter, size)
    left, right, scale_x, shift_x = _central_span(shape[1], shorter, size)
    window = tf.raw_ops.ScaleAndTranslate(
        images=image[tf.newaxis, top:bottom, left:right],
        size=[size, size],
        scale=tf.stack([scale_y, scale_x]),
        translation=tf.stack([shift_y, shift_x]),
        kernel_type="triangle",
        antialias=True,
    )[0]
    return tf.cast(tf.clip_by_value(tf.round(window), 0.0, 255.0), tf.uint8)


def _central_span(length: tf.Tensor, shorter: tf.Tensor, size: int) -> tuple[tf.Tensor, ...]:
    """One axis of `resize_and_center_crop`: the input span ``[start, stop)`` the central ``size``
    outputs read, the scale, and the translation that makes ScaleAndTranslate's output 0 the
    central patch's first pixel when it is given only that span.

    As the whole-image resize: the axis is rescaled to ``new = max(size, round(length · size /
    shorter))`` pixels, scale ``new / length`` (float32, as ``tf.image.resize`` computes it);
    output ``i`` samples input coordinate ``(i + 0.5) / scale`` with a triangle filter of radius
    ``max(1 / scale, 1)``; the patch is outputs ``offset .. offset + size - 1``, ``offset = (new -
    size) // 2``. The span keeps a pixel of margin on each side.
    """
    length64 = tf.cast(length, tf.float64)
    rescaled = tf.cast(tf.round(length64 * (size / tf.cast(shorter, tf.float64))), tf.int64)
    new = tf.maximum(tf.constant(size, tf.int64), rescaled)
    scale = tf.cast(new, tf.float32) / tf.cast(length, tf.float32)
    scale64 = tf.cast(scale, tf.float64)
    offset = tf.cast((new - size) // 2, tf.float64)
    radius = tf.maximum(1.0 / scale64, 1.0)
    first, last = (offset + 0.5) / scale64, (offset + size - 0.5) / scale64
    start = tf.maximum(tf.constant(0, tf.int64), tf.cast(tf.floor(first - radius - 0.5), tf.int64) - 1)
    stop = tf.minimum(length, tf.cast(tf.math.ceil(last + radius - 0.5), tf.int64) + 2)
    translation = tf.cast(tf.cast(start, tf.float64) * scale64 - offset, tf.float32)
    return start, stop, scale, translation
