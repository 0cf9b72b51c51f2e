"""``neighbours``: the training images nearest to query images in fc7 space (Figure 4).

The paper's Figure 4 shows, for test images, the six training images whose last hidden layer
(fc7, 4096-d) vectors are nearest in Euclidean distance. Here both sides are seen as
evaluation sees them: the centre view, finished by the model's own `ViewNormalization`
(its training mean), then the float32 inference network up to ``fc7``:

* query files (JPEG, PNG, GIF, BMP) through `alexnet_tf.serving.serving_model.decode_square` (§2's rescale
  and central crop, as export and predict do) and the centre crop;
* training records through `InputPipeline.eval_dataset` (``split="train"``), centre views.

The search is exact and streams: one pass over the split in batches, each batch's squared
distances to all queries computed as ``|q|² − 2 q·x + |x|²`` (one matrix product) and merged
with the running k best per query by `tf.math.top_k`. The distances are computed in float64:
in float32 the expansion's rounding (about 1e-7 × |q|²) puts an image's distance to itself at
a few hundredths instead of ~0; the product is tiny next to the network's forward pass.

Why not scikit-learn's ``NearestNeighbors``: it indexes every fc7 vector in memory at once
(ImageNet: 1.2 M × 4096 float32 ≈ 20 GB) and would need a second pass to fetch the images. Here
memory is O(queries × k) whatever the size of the training set, and the k best crops travel
with their distances, so one pass is enough.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from alexnet_tf.constants import MEAN_NONE
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.figures.sheet import CAPTION_BAND, Sheet
from alexnet_tf.files import write_png
from alexnet_tf.input import augment
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.input.views import fixed_views
from alexnet_tf.network.layers import IMAGE
from alexnet_tf.records import schema
from alexnet_tf.runs import load_model
from alexnet_tf.serving.serving_model import decode_square, inference_parts

FEATURE_LAYER = "fc7"
DEFAULT_NEIGHBOURS = 6  # Figure 4
DEFAULT_BATCH_SIZE = 64
GAP = 6  # pixels between images
MARGIN = 8
CHARACTER_WIDTH = 5  # pixels, about, at the captions' 7 points: captions are cut to the image's width


@dataclasses.dataclass(frozen=True)
class Neighbours:
    """The k nearest training images of each query, nearest first.

    Attributes:
      queries: the query files, in the order given.
      query_images: uint8 centre views ``[q, crop, crop, 3]``.
      images: uint8 centre views of the neighbours ``[q, k, crop, crop, 3]``.
      labels: the neighbours' class indices ``[q, k]``.
      distances: Euclidean fc7 distances ``[q, k]``.
      class_names: name of every class index.
    """

    queries: tuple[str, ...]
    query_images: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    distances: np.ndarray
    class_names: tuple[str, ...]


def find_neighbours(
    source: str,
    data_dir: str,
    queries: Sequence[str],
    k: int = DEFAULT_NEIGHBOURS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    split: str = schema.TRAIN,
    progress: bool = False,
) -> Neighbours:
    """The ``k`` records of ``split`` nearest to each query in fc7 space (module docstring);
    ``progress`` shows a bar over the split's batches (one forward pass over all of them)."""
    if not queries:
        raise invalid("queries", queries, "at least one image file")
    if k < 1:
        raise invalid("k", k, "a positive integer")
    path, model = load_model(source)
    network, normalization = inference_parts(model, path)
    if FEATURE_LAYER not in {layer.name for layer in network.layers}:
        raise InputError(f"{path}: the network has no {FEATURE_LAYER} layer; is it an alexnet-tf model?")
    features = keras.Model(network.input, network.get_layer(FEATURE_LAYER).output)
    crop = network.input_shape[1]
    # The model's ViewNormalization finishes the views, so the pipeline needs no mean of its own.
    pipeline = InputPipeline(
        InputConfig(
            data_dir,
            batch_size=batch_size,
            crop_size=crop,
            mean=MEAN_NONE,
            lighting_strength=0,
        )
    )
    if pipeline.decoder.image_size != normalization.image_size:
        raise InputError(
            f"{data_dir}: its images are {pipeline.decoder.image_size}² but {path} was trained on "
            f"{normalization.image_size}² images; use the model's dataset"
        )
    queried = query_views(queries, normalization.image_size, crop)

    @tf.function(reduce_retracing=True, autograph=False)
    def embed(views: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.cast(features(normalization(views), training=False), tf.float64)

    query_features = embed(queried)
    best = _Best(len(queries), k, crop)
    batches = math.ceil(pipeline.num_records(split) / batch_size)
    with tqdm(total=batches, unit="batch", desc="neighbours", disable=not progress, dynamic_ncols=True) as bar:
        for views, labels in pipeline.eval_dataset(split):
            best.merge(query_features, embed(views), views[IMAGE], labels)
            bar.update()
    found = int(np.sum(np.isfinite(best.distances.numpy()[0])))
    if found == 0:
        raise InputError(f"{data_dir}: the '{split}' split has no records")
    return Neighbours(
        queries=tuple(queries),
        query_images=queried[IMAGE].numpy(),
        images=best.images.numpy()[:, :found],
        labels=best.labels.numpy()[:, :found],
        distances=np.sqrt(best.distances.numpy()[:, :found]),
        class_names=tuple(info.name for info in pipeline.metadata.classes),
    )


class _Best:
    """The running k smallest squared distances per query, with their crops and labels."""

    def __init__(self, queries: int, k: int, crop: int) -> None:
        self.k = k
        self.distances = tf.fill([queries, k], tf.constant(np.inf, tf.float64))
        self.images = tf.zeros([queries, k, crop, crop, 3], tf.uint8)
        self.labels = tf.fill([queries, k], -1)

    def merge(self, query: tf.Tensor, batch: tf.Tensor, images: tf.Tensor, labels: tf.Tensor) -> None:
        queries, k = query.shape[0], self.k
        squared = (
            tf.reduce_sum(query**2, axis=1, keepdims=True)
            - 2.0 * tf.matmul(query, batch, transpose_b=True)
            + tf.reduce_sum(batch**2, axis=1)[tf.newaxis]
        )
        candidates = tf.concat([self.distances, tf.maximum(squared, 0.0)], axis=1)  # [q, k + b]
        chosen = tf.math.top_k(-candidates, k).indices  # ties: the earlier candidate, so the kept one
        self.distances = tf.gather(candidates, chosen, batch_dims=1)
        # Candidate j of query i: its own kept entry i·k + j (j < k), else batch image j − k.
        rows = tf.range(queries)[:, tf.newaxis]
        flat = tf.where(chosen < k, rows * k + chosen, queries * k + chosen - k)
        pool = tf.concat([tf.reshape(self.images, [queries * k, *images.shape[1:]]), images], axis=0)
        self.images = tf.gather(pool, flat)
        label_pool = tf.concat([tf.reshape(self.labels, [-1]), tf.cast(labels, tf.int32)], axis=0)
        self.labels = tf.gather(label_pool, flat)


def query_views(paths: Sequence[str], image_size: int, crop: int) -> dict[str, tf.Tensor]:
    """Centre views of the query files, as `fixed_views` lays them out for `ViewNormalization`."""
    offset = augment.center_offset(image_size, crop)
    crops = []
    for path in paths:
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise InputError(f"{path}: no such image file")
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
        try:
            square = decode_square(tf.constant(data), image_size)
        except tf.errors.InvalidArgumentError:
            raise InputError(f"{path}: not a JPEG, PNG, GIF or BMP image") from None
        crops.append(augment.crop_window(square, offset, crop))
    count = len(crops)
    return fixed_views(tf.stack(crops), tf.tile(offset[tf.newaxis], [count, 1]), tf.zeros([count], tf.bool))


def neighbour_sheet(found: Neighbours) -> Sheet:
    """One row per query: the query's centre view, then its neighbours, nearest first."""
    queries, k = found.images.shape[:2]
    crop = found.query_images.shape[1]
    sheet = Sheet(2 * MARGIN + queries * (CAPTION_BAND + crop + GAP), 2 * MARGIN + (1 + k) * (crop + GAP) + GAP)
    for q in range(queries):
        top, left = neighbour_origin(found, q, -1)
        sheet.caption(posixpath.basename(found.queries[q]), top - CAPTION_BAND, left)
        sheet.place(found.query_images[q], top, left)
        for rank in range(k):
            top, left = neighbour_origin(found, q, rank)
            name = found.class_names[int(found.labels[q, rank])]
            text = f"{found.distances[q, rank]:.3g} {name}"
            sheet.caption(text[: crop // CHARACTER_WIDTH], top - CAPTION_BAND, left)
            sheet.place(found.images[q, rank], top, left)
    return sheet


def neighbour_origin(found: Neighbours, query: int, rank: int) -> tuple[int, int]:
    """PNG pixel (top, left) of neighbour ``rank`` (0: nearest; −1: the query itself) of ``query``."""
    crop = found.query_images.shape[1]
    top = MARGIN + query * (CAPTION_BAND + crop + GAP) + CAPTION_BAND
    return top, MARGIN if rank < 0 else MARGIN + (1 + rank) * (crop + GAP) + GAP


def write_neighbours(
    output: str, source: str, data_dir: str, queries: Sequence[str], **options
) -> tuple[Neighbours, tuple[int, int]]:
    """Finds the neighbours (`find_neighbours`) and writes them as a PNG to ``output``."""
    found = find_neighbours(source, data_dir, queries, **options)
    return found, write_png(output, neighbour_sheet(found).figure())
