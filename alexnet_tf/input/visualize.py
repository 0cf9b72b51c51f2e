"""``show-augment``: a PNG grid of what the network sees, drawn by the pipeline's own functions.

For each of the first few records of a split, two rows: the decoded 256×256 image followed by
random training views (§4.1 crop, mirror and PCA lighting, exaggerated so a person can see it:
each view's title says by how much, ``light×10`` by default),
then the ten test patches (§4.1) in `augment.TEN_CROP_NAMES` order. Views are shown before mean
subtraction (``mean="none"``) so they look like photographs; otherwise they are exactly what
the pipeline's `FloatViews` make for training and ten-crop evaluation.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from alexnet_tf import paper
from alexnet_tf.constants import (
    DEFAULT_AUGMENT_IMAGES,
    DEFAULT_AUGMENT_LIGHTING_STRENGTH,
    DEFAULT_AUGMENT_VIEWS,
    MEAN_NONE,
)
from alexnet_tf.files import write_png
from alexnet_tf.input import augment
from alexnet_tf.input.decode import LABEL
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.input.views import FloatViews
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import DatasetMetadata

# Each cell is a 128×128-pixel image under a 16-pixel title line (at DPI 64: 2 and 0.25 inches,
# exact in binary floating point), so the PNG is exactly (columns × 128) × (rows × 144) pixels.
CELL_INCHES = 2.0
TITLE_INCHES = 0.25
DPI = 64


def grid_shape(images: int, views: int) -> tuple[int, int]:
    """(rows, columns) of the grid for ``images`` records and ``views`` training views each."""
    return 2 * images, max(1 + views, paper.TEST_VIEWS)


def augment_grid(
    data_dir: str,
    *,
    split: str = schema.TRAIN,
    images: int = DEFAULT_AUGMENT_IMAGES,
    views: int = DEFAULT_AUGMENT_VIEWS,
    lighting_strength: float = DEFAULT_AUGMENT_LIGHTING_STRENGTH,
    seed: int = 0,
) -> Figure:
    """The grid as a matplotlib figure (Agg canvas; no pyplot state)."""
    config = InputConfig(
        data_dir, mean=MEAN_NONE, lighting_strength=lighting_strength, seed=seed, normalize_in_model=False
    )
    pipeline = InputPipeline(config)
    float_views: FloatViews = pipeline.views  # mean='none', normalize_in_model=False: float views
    decoder = pipeline.decoder
    records = list(pipeline.records(split).take(images))
    rows, columns = grid_shape(len(records), views)
    height = rows * (CELL_INCHES + TITLE_INCHES)
    figure = Figure(figsize=(columns * CELL_INCHES, height), dpi=DPI)
    axes = figure.subplots(rows, columns, squeeze=False)
    # A title line above every row of images: hspace is relative to the axes height.
    figure.subplots_adjust(
        left=0.0, right=1.0, bottom=0.0, top=1.0 - TITLE_INCHES / height, wspace=0.03, hspace=TITLE_INCHES / CELL_INCHES
    )
    for ax in axes.flat:
        ax.set_axis_off()
    # Each training view says how far its lighting is from the paper's (10x by default).
    lighting = "" if lighting_strength == 1 else f" light×{lighting_strength:g}"
    for index, (path, number, record) in enumerate(records):
        top, bottom = axes[2 * index], axes[2 * index + 1]
        features = decoder.parse(record, where=(path, number))
        name = _class_name(pipeline.metadata, int(features[LABEL]))
        _show(top[0], decoder.decode(features), f"{name}, whole {decoder.image_size}²")
        for view_index in range(views):
            view_seed = tf.constant([seed, index * views + view_index], tf.int64)
            view = float_views.sample(view_seed)
            image = float_views.apply(features, view)
            y, x = view.offset.numpy()
            _show(top[1 + view_index], image, f"({y},{x}){' mirrored' if view.flip else ''}{lighting}")
        crops = float_views.ten_crop(features)
        for crop_index, name in enumerate(augment.TEN_CROP_NAMES):
            _show(bottom[crop_index], crops[crop_index], name)
    return figure


def write_augment_grid(output: str, data_dir: str, **options) -> tuple[int, int]:
    """Writes the grid as a PNG to ``output`` (local or ``gs://``, atomically); returns its size."""
    return write_png(output, augment_grid(data_dir, **options))


def _show(ax, image: tf.Tensor, title: str) -> None:
    pixels = np.clip(np.round(tf.cast(image, tf.float32).numpy()), 0, 255).astype(np.uint8)
    ax.imshow(pixels, interpolation="nearest")
    ax.set_title(title, fontsize=7, pad=2)


def _class_name(metadata: DatasetMetadata, label: int) -> str:
    classes = metadata.classes
    return classes[label].name if 0 <= label < len(classes) else f"label {label}"
