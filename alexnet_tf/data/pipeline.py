"""The `tf.data` input pipeline: the paper's training augmentation and test-time views.

Reads the shards and metadata that ``alexnet-tf prepare-data`` writes (`schema`, `metadata`) and
returns batched ``(images, labels)`` datasets:

* `train_dataset`: random 224×224 crops of the 256×256 images and their mirror images, PCA
  lighting, mean subtraction (§4.1, §2), shuffled and repeated forever;
* `eval_dataset`: the centre crop, or the ten test views (§4.1) as ``[batch, 10, 224, 224, 3]``.

Per training record, in this order (each step is a function in `alexnet_tf.data.augment`):

1. parse the Model Garden record; draw the view (crop corner, mirror bit, lighting alpha) from a
   per-record seed;
2. decode only the crop window (``tf.io.decode_and_crop_jpeg``) when the records are
   256×256; otherwise decode the record whole, apply §2 (shorter side to 256, central 256×256)
   and cut the window;
3. mirror the uint8 window if the view says so;
4. cast to float32 and subtract the mean: the same window of the mean image, mirrored with the
   image (the paper's), the per-channel mean, or nothing; add the lighting offset (an RGB
   constant per image, so mirroring does not touch it);
5. cast to the output dtype.

All of it runs per record inside the parallel ``map``. Doing the float work on whole batches
instead made the pipeline about half as fast on CPU: per-record tensors stay in cache, batch
tensors do not.

With ``InputConfig(normalise_in_model=True)`` the per-record work stops after step 2: records
yield the uint8 crop and its corner, each batch then draws its mirror bits and lighting offsets
in one go, and steps 3–5 run in the model's first layer (`normalization.ViewNormalization`), on
the training device. Evaluation datasets yield the same kind of views (fixed corners and mirror
bits, no lighting).

Training randomness is stateless (`augment`), so ``deterministic=True`` with a seed reproduces
every batch, and every pass over the data draws fresh views (§4.1: alpha "drawn once per image
per pass"). Record number ``i`` of the stream gets the seed ``fold_in(key, i)`` (with
``normalise_in_model``: the crop corner from seed ``[key[0], i]``, batch ``j``'s mirror bits and
lighting from ``[key[1], j]``), with ``key`` derived from ``InputConfig.seed`` and the input
pipeline id.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.data import augment, normalization, schema
from alexnet_tf.data.metadata import DatasetMetadata, load_mean_image
from alexnet_tf.data.normalization import MEAN_CHANNEL, MEAN_IMAGE, MEAN_MODES, MEAN_NONE  # noqa: F401 (re-exported)
from alexnet_tf.errors import InputError

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")

# Files read at once by the parallel interleave: enough shards that records from many of them
# mix before the shuffle buffer, few enough that read buffers stay small.
INTERLEAVE_CYCLE = 16


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """What the input pipeline reads and how it transforms it; defaults are the paper's.

    Attributes:
      data_dir: directory (local or ``gs://``) with the shards, ``metadata.json`` and
        ``mean_image.npy`` written by prepare-data.
      batch_size: global batch size (§5: 128); with an input context each replica gets
        ``batch_size / num_replicas_in_sync``.
      shuffle_buffer: records held by the shuffle buffer (not in the paper; 10,000 serialized
        256×256 records take about 250 MB).
      label_offset: subtracted from ``image/class/label``. None uses the metadata's offset, giving
        0-based class indices for either convention; 0 keeps Model Garden's 1..N labels as they
        are (for a 1001-way model with a background class).
      mean: `MEAN_IMAGE` (the paper's per-pixel mean image), `MEAN_CHANNEL` or `MEAN_NONE`.
      lighting_strength: multiplies §4.1's alpha standard deviation (paper.PCA_LIGHTING_STD);
        1.0 is the paper, 0 turns PCA lighting off.
      crop_size: side of the training and test patches (§4.1: 224).
      dtype: output image dtype: "float32", or "bfloat16" / "float16" for mixed precision.
      normalise_in_model: False (default): the pipeline does everything and yields float
        images. True: it stops at the uint8 crop and yields ``({"image", "offset", "flip",
        "lighting"}, labels)``, and the model finishes the views with the `ViewNormalization`
        layer from `Preprocessor.view_normalization` (mirror, cast, mean, lighting), on the
        training device. Same distribution of views, 30–35% less host CPU per image and a
        quarter of the bytes per batch; the views drawn for a given seed differ between the
        two modes. See `alexnet_tf.data.normalization`.
      deterministic: keep element order fixed (slower: a slow record holds up the others); with
        ``seed`` the batches are identical run to run.
      seed: seed for file and record shuffling and the augmentation; None draws a fresh one.
    """

    data_dir: str
    batch_size: int = paper.BATCH_SIZE
    shuffle_buffer: int = 10_000
    label_offset: int | None = None
    mean: str = MEAN_IMAGE
    lighting_strength: float = 1.0
    crop_size: int = paper.CROP_SIZE
    dtype: str = "float32"
    normalise_in_model: bool = False
    deterministic: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "shuffle_buffer", "crop_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)}: must be a positive integer")
        if self.lighting_strength < 0:
            raise InputError(f"lighting_strength={self.lighting_strength}: must be >= 0 (0 turns it off)")
        if self.mean not in MEAN_MODES:
            raise InputError(f"mean={self.mean!r}: choose one of {', '.join(MEAN_MODES)}")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype={self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.deterministic and self.seed is None:
            raise InputError("deterministic=True needs a seed: set seed to an integer")


class Preprocessor:
    """Per-record parsing, decoding and transformation for one dataset and config.

    Holds the metadata's constants (mean image or mean RGB, PCA statistics) as tensors; its
    methods are what the datasets map over, and what `show-augment` draws.
    """

    def __init__(self, config: InputConfig, metadata: DatasetMetadata, mean_image: np.ndarray | None):
        self.config = config
        self.metadata = metadata
        # Records that kept their original geometry (image_size None) are brought to §2's
        # 256×256 on the fly, at the cost of decoding them whole.
        self.image_size = metadata.image_size or paper.IMAGE_SIZE
        self.resize_records = metadata.image_size is None
        if config.crop_size > self.image_size:
            raise InputError(f"crop_size={config.crop_size} is larger than the {self.image_size}-pixel images")
        self.label_offset = metadata.label_offset if config.label_offset is None else config.label_offset
        self.dtype = tf.as_dtype(config.dtype)
        self._mean_image = self._mirrored_mean_image = None
        if mean_image is not None:
            self._mean_image = self._mean_image_tensor(mean_image)
            # Windows of the mirrored mean image are the mirrored windows, without a float reverse.
            self._mirrored_mean_image = tf.reverse(self._mean_image, axis=[1])
        self._mean_rgb = None
        self._eigenvalues = self._eigenvectors = None
        needs_stats = config.mean == MEAN_CHANNEL or config.lighting_strength > 0
        if needs_stats and metadata.stats is None:
            raise InputError(
                f"{posixpath.join(config.data_dir, 'metadata.json')} has no stats: re-run prepare-data "
                "with statistics, or use mean='none' and lighting_strength=0"
            )
        if config.mean == MEAN_CHANNEL:
            self._mean_rgb = tf.constant(metadata.stats.mean_rgb, tf.float32)
        if config.lighting_strength > 0:
            self._eigenvalues = tf.constant(metadata.stats.eigenvalues, tf.float32)
            self._eigenvectors = tf.constant(metadata.stats.eigenvectors, tf.float32)

    @classmethod
    def from_config(cls, config: InputConfig) -> Preprocessor:
        """Loads the metadata (and the mean image if ``config.mean`` is `MEAN_IMAGE`)."""
        try:
            metadata = DatasetMetadata.load(config.data_dir)
            mean_image = load_mean_image(config.data_dir) if config.mean == MEAN_IMAGE else None
        except FileNotFoundError as error:
            hint = " (or use mean='channel')" if "mean_image" in str(error) else ""
            raise InputError(f"{error}{hint}") from None
        except (ValueError, KeyError, TypeError) as error:
            where = posixpath.join(config.data_dir, "metadata.json")
            raise InputError(f"{where}: unreadable metadata ({error!r}): re-run prepare-data") from None
        return cls(config, metadata, mean_image)

    def _mean_image_tensor(self, mean_image: np.ndarray) -> tf.Tensor:
        size = self.image_size
        if mean_image.ndim != 3 or mean_image.shape[2] != 3:
            raise InputError(
                f"{posixpath.join(self.config.data_dir, 'mean_image.npy')}: shape {mean_image.shape}, "
                "expected height × width × 3: re-run prepare-data"
            )
        image = tf.constant(mean_image, tf.float32)
        if mean_image.shape[:2] != (size, size):
            logger.warning("mean image is %s; resizing it to the %d×%d images", mean_image.shape, size, size)
            image = tf.image.resize(image, [size, size], antialias=True)
        return image

    # --- Parsing and decoding -------------------------------------------------------------

    def parse(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        """The record's features, with ``label`` as an int32 class index (offset subtracted)."""
        features = schema.parse_example(serialized)
        features["label"] = tf.cast(features[schema.LABEL], tf.int32) - self.label_offset
        return features

    def decode(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """The whole record as a uint8 ``[256, 256, 3]`` image (§2 applied if it is another size)."""
        image = tf.io.decode_jpeg(features[schema.ENCODED], channels=3)
        if not self.resize_records:
            return tf.ensure_shape(image, [self.image_size, self.image_size, 3])
        shape = tf.shape(image)
        fits = (shape[0] == self.image_size) & (shape[1] == self.image_size)
        image = tf.cond(fits, lambda: image, lambda: augment.resize_and_centre_crop(image, self.image_size))
        return tf.ensure_shape(image, [self.image_size, self.image_size, 3])

    def decode_window(self, features: dict[str, tf.Tensor], offset: tf.Tensor) -> tf.Tensor:
        """The uint8 ``crop_size``² window at ``offset`` of the (256×256) image.

        Records of a 256×256 dataset decode only that window (``decode_and_crop_jpeg``). It
        matches decoding everything and slicing, except that the window's first and last
        columns can differ by a few levels: the decoder's chroma upsampling sees the crop edge
        instead of the neighbouring pixels. Other records are decoded whole (`decode`).
        """
        size = self.config.crop_size
        if self.resize_records:
            window = augment.crop_window(self.decode(features), offset, size)
        else:
            corner_and_size = tf.concat([offset, [size, size]], axis=0)
            window = tf.io.decode_and_crop_jpeg(features[schema.ENCODED], corner_and_size, channels=3)
        return tf.ensure_shape(window, [size, size, 3])

    def normalise(
        self,
        image: tf.Tensor,
        offset: tf.Tensor,
        alpha: tf.Tensor | None = None,
        mirrored: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """float32 ``image`` minus the mean, plus §4.1's lighting for ``alpha`` if lighting is on.

        With the mean image, the window subtracted is the one at ``offset`` of ``image``'s size,
        mirrored when ``mirrored`` is true (``image`` is then the mirrored window).
        """
        shift = None if alpha is None else self.lighting_offset(alpha)
        if self._mean_rgb is not None:
            shift = -self._mean_rgb if shift is None else shift - self._mean_rgb
        mean = None
        if self._mean_image is not None:
            mean = self._mean_window(offset, image.shape[0], mirrored)
        return augment.normalise(image, mean, shift)

    def lighting_offset(self, alpha: tf.Tensor) -> tf.Tensor | None:
        """§4.1's RGB lighting offset ``[..., 3]`` for ``alpha [..., 3]``; None with lighting off."""
        if self._eigenvalues is None:
            return None
        return augment.pca_lighting_offset(alpha, self._eigenvalues, self._eigenvectors)

    def _mean_window(self, offset: tf.Tensor, size: int, mirrored: tf.Tensor | None) -> tf.Tensor:
        def window() -> tf.Tensor:
            return augment.crop_window(self._mean_image, offset, size)

        def mirrored_window() -> tf.Tensor:
            # Column x of the image is column (image_size - 1 - x) of the mirrored image.
            corner = tf.stack([offset[0], self.image_size - size - offset[1]])
            return augment.crop_window(self._mirrored_mean_image, corner, size)

        return window() if mirrored is None else tf.cond(mirrored, mirrored_window, window)

    # --- Float views (the default) ---------------------------------------------------------

    @property
    def lighting_stddev(self) -> float:
        """The standard deviation of §4.1's alpha_i at the configured strength."""
        return paper.PCA_LIGHTING_STD * self.config.lighting_strength

    def sample_train_view(self, seed: tf.Tensor) -> augment.View:
        """The §4.1 view (crop corner, mirror bit, lighting alpha) that ``seed`` draws."""
        return augment.sample_view(seed, self.image_size, self.config.crop_size, self.lighting_stddev)

    def train_view(self, serialized: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One random training view (§4.1) of a record, and its label."""
        return self.apply_view(serialized, self.sample_train_view(seed))

    def apply_view(self, serialized: tf.Tensor, view: augment.View) -> tuple[tf.Tensor, tf.Tensor]:
        """The record cut, mirrored and lit as ``view`` says, minus the mean; and its label."""
        features = self.parse(serialized)
        window = augment.flip_left_right(self.decode_window(features, view.offset), view.flip)
        image = self.normalise(window, view.offset, view.alpha, mirrored=view.flip)
        return tf.cast(image, self.dtype), features["label"]

    def centre_view(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The central ``crop_size``² patch of a record, and its label."""
        features = self.parse(serialized)
        offset = augment.centre_offset(self.image_size, self.config.crop_size)
        image = self.normalise(self.decode_window(features, offset), offset)
        return tf.cast(image, self.dtype), features["label"]

    def ten_crop_views(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """§4.1's ten test patches ``[10, crop, crop, 3]`` (`augment.TEN_CROP_NAMES` order), label."""
        features = self.parse(serialized)
        image = self.normalise(self.decode(features), tf.zeros([2], tf.int32))
        return tf.cast(augment.ten_crop(image, self.config.crop_size), self.dtype), features["label"]

    # --- uint8 views for ViewNormalization (normalise_in_model) ----------------------------

    def view_normalization(self, **kwargs: Any) -> normalization.ViewNormalization:
        """The layer that finishes this pipeline's uint8 views, with the dataset's mean set.

        Its output dtype is ``config.dtype`` (as a mixed policy for bfloat16 / float16).
        """
        policy = "float32" if self.config.dtype == "float32" else f"mixed_{self.config.dtype}"
        layer = normalization.ViewNormalization(self.config.mean, self.image_size, dtype=policy, **kwargs)
        if self._mean_image is not None:
            layer.set_mean(self._mean_image)
        elif self._mean_rgb is not None:
            layer.set_mean(self._mean_rgb)
        return layer

    def train_crop(self, serialized: tf.Tensor, seed: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """A random uint8 training crop and its offset; `add_flips_and_lighting` draws the rest."""
        features = self.parse(serialized)
        offset = augment.crop_offset(seed, self.image_size, self.config.crop_size)
        crop = {normalization.IMAGE: self.decode_window(features, offset), normalization.OFFSET: offset}
        return crop, features["label"]

    def add_flips_and_lighting(
        self, crops: dict[str, tf.Tensor], labels: tf.Tensor, seed: tf.Tensor
    ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Draws the mirror bits and lighting offsets of a batch of `train_crop` crops.

        Drawn per batch, not per record: a handful of random ops on a record cost the CPU
        about as much as decoding a tenth of its JPEG.
        """
        count = tf.shape(labels)[:1]
        flip_seed, alpha_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        lighting = self.lighting_offset(augment.lighting_alpha(alpha_seed, self.lighting_stddev, count))
        views = dict(crops)
        views[normalization.FLIP] = augment.flip_coin(flip_seed, count)
        views[normalization.LIGHTING] = tf.zeros(tf.concat([count, [3]], 0)) if lighting is None else lighting
        return views, labels

    def centre_crop(self, serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """`centre_view` as a uint8 view for `ViewNormalization`."""
        features = self.parse(serialized)
        offset = augment.centre_offset(self.image_size, self.config.crop_size)
        return _fixed_views(self.decode_window(features, offset), offset, False), features["label"]

    def ten_crops(self, serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """`ten_crop_views` as uint8 views for `ViewNormalization`: ``image [10, crop, crop, 3]``."""
        features = self.parse(serialized)
        patches = augment.five_crop(self.decode(features), self.config.crop_size)
        offsets = tf.constant(augment.ten_crop_offsets(self.image_size, self.config.crop_size) * 2, tf.int32)
        flips = tf.constant([False] * 5 + [True] * 5)
        return _fixed_views(tf.concat([patches, patches], axis=0), offsets, flips), features["label"]


def _fixed_views(image: tf.Tensor, offset: tf.Tensor, flip: bool | tf.Tensor) -> dict[str, tf.Tensor]:
    """Evaluation views for `ViewNormalization`: given offsets and mirror bits, no lighting."""
    return {
        normalization.IMAGE: image,
        normalization.OFFSET: offset,
        normalization.FLIP: tf.convert_to_tensor(flip),
        normalization.LIGHTING: tf.zeros(offset.shape[:-1] + [3]),
    }


# --- Datasets ---------------------------------------------------------------------------------


def train_dataset(
    config: InputConfig, input_context: tf.distribute.InputContext | None = None
) -> tf.data.Dataset:
    """Batches of training views ``(images [b, 224, 224, 3], labels [b] int32)``, repeated forever.

    Each pass over this pipeline's share of the training split is a fresh shuffle with fresh
    views. Batches are full (``drop_remainder``): one epoch is ``num_records // batch_size``
    steps. With ``input_context`` (``strategy.distribute_datasets_from_function``), the batch is
    the per-replica batch and this pipeline reads only its share of the data (`shard_files`).
    """
    preprocessor = Preprocessor.from_config(config)
    seeds = _Seeds.derive(config.seed, input_context)
    records = _records(preprocessor, schema.TRAIN, input_context, file_shuffle_seed=seeds.file_shuffle)
    dataset = records.shuffle(config.shuffle_buffer, seed=seeds.record_shuffle).repeat().enumerate()
    key = tf.constant(seeds.augment_key, tf.int64)
    if not config.normalise_in_model:
        dataset = dataset.map(
            lambda index, serialized: preprocessor.train_view(
                serialized, tf.random.experimental.stateless_fold_in(key, index)
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return _batch(dataset, config, input_context, drop_remainder=True)
    # Seeds [key word, record or batch number]: stateless ops scramble their seed, so these are
    # independent streams, at less cost per record than fold_in.
    dataset = dataset.map(
        lambda index, serialized: preprocessor.train_crop(serialized, tf.stack([key[0], index])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _batch(
        dataset,
        config,
        input_context,
        drop_remainder=True,
        per_batch=lambda index, crops, labels: preprocessor.add_flips_and_lighting(
            crops, labels, tf.stack([key[1], index])
        ),
    )


def eval_dataset(
    config: InputConfig,
    ten_crop: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    split: str = schema.VALIDATION,
) -> tf.data.Dataset:
    """One pass over ``split``: ``(images, labels)`` with centre crops ``[b, 224, 224, 3]``, or
    with ``ten_crop`` the ten views ``[b, 10, 224, 224, 3]`` so that evaluation can average the
    ten softmax outputs over axis 1 (§4.1). The last batch may be smaller.
    """
    preprocessor = Preprocessor.from_config(config)
    records = _records(preprocessor, split, input_context, file_shuffle_seed=None)
    if config.normalise_in_model:
        view = preprocessor.ten_crops if ten_crop else preprocessor.centre_crop
    else:
        view = preprocessor.ten_crop_views if ten_crop else preprocessor.centre_view
    dataset = records.map(view, num_parallel_calls=tf.data.AUTOTUNE)
    return _batch(dataset, config, input_context, drop_remainder=False)


def shard_files(
    files: list[str], input_context: tf.distribute.InputContext | None
) -> tuple[list[str], bool]:
    """This input pipeline's files, and whether its records must be sharded instead.

    With at least as many files as pipelines, pipeline ``k`` of ``n`` reads files ``k, k+n, …``.
    With fewer (auto-sharding by file then fails or hangs in TF), every pipeline reads every
    file in the same order and keeps every n-th record, and a warning says so.
    """
    pipelines = input_context.num_input_pipelines if input_context else 1
    if pipelines == 1:
        return files, False
    if len(files) >= pipelines:
        mine = files[input_context.input_pipeline_id :: pipelines]
        logger.info(
            "input pipeline %d of %d reads %d of %d files",
            input_context.input_pipeline_id, pipelines, len(mine), len(files),
        )  # fmt: skip
        return mine, False
    logger.warning(
        "%d shard files for %d input pipelines: each pipeline reads every file and keeps every "
        "%d-th record (more I/O per worker). Write at least %d shards to shard by file.",
        len(files), pipelines, pipelines, pipelines,
    )  # fmt: skip
    return files, True


def split_files(data_dir: str, metadata: DatasetMetadata, split: str) -> list[str]:
    """Paths of ``split``'s shards as the metadata lists them, after checking they exist."""
    where = posixpath.join(data_dir, "metadata.json")
    if split not in metadata.splits or not metadata.splits[split].shards:
        raise InputError(f"{where} lists no '{split}' shards (splits: {', '.join(metadata.splits) or 'none'})")
    files = [posixpath.join(data_dir, shard.name) for shard in metadata.splits[split].shards]
    present = set(tf.io.gfile.glob(posixpath.join(data_dir, schema.shard_glob(split))))
    missing = [path for path in files if path not in present]
    if missing:
        raise InputError(
            f"{len(missing)} shard(s) listed in {where} are missing, e.g. {missing[0]}: re-run prepare-data"
        )
    return files


def interleave_records(
    files: list[str], deterministic: bool | None = None, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """Serialized records of ``files``, read by a parallel interleave of `INTERLEAVE_CYCLE` files.

    With ``shuffle_seed`` the file order is shuffled first, afresh on every pass.
    """
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_seed is not None:
        names = names.shuffle(len(files), seed=shuffle_seed)
    return names.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), INTERLEAVE_CYCLE),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def _records(
    preprocessor: Preprocessor,
    split: str,
    input_context: tf.distribute.InputContext | None,
    file_shuffle_seed: int | None,
) -> tf.data.Dataset:
    config = preprocessor.config
    files, shard_records = shard_files(split_files(config.data_dir, preprocessor.metadata, split), input_context)
    if not shard_records:
        return interleave_records(files, shuffle_seed=file_shuffle_seed)
    # Every pipeline must see the same record order for every-n-th-record sharding to split the
    # data without overlap: no file shuffle, a deterministic interleave.
    records = interleave_records(files, deterministic=True)
    return records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def _batch(
    dataset: tf.data.Dataset,
    config: InputConfig,
    input_context: tf.distribute.InputContext | None,
    drop_remainder: bool,
    per_batch: Callable[[tf.Tensor, Any, tf.Tensor], tuple[Any, tf.Tensor]] | None = None,
) -> tf.data.Dataset:
    """Batches, then maps ``per_batch(batch number, features, labels)`` if given, then prefetches."""
    batch_size = config.batch_size
    if input_context is not None:
        try:
            batch_size = input_context.get_per_replica_batch_size(config.batch_size)
        except ValueError:
            raise InputError(
                f"batch_size={config.batch_size} is not divisible by the "
                f"{input_context.num_replicas_in_sync} replicas in sync: use a multiple"
            ) from None
    options = tf.data.Options()
    options.deterministic = config.deterministic
    if input_context is not None:
        # This function shards by itself; stop tf.distribute from sharding again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if per_batch is not None:
        dataset = dataset.enumerate().map(
            lambda index, batch: per_batch(index, *batch), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


@dataclasses.dataclass(frozen=True)
class _Seeds:
    """Independent seeds for one input pipeline, all derived from the config's seed."""

    file_shuffle: int
    record_shuffle: int
    augment_key: tuple[int, int]

    @classmethod
    def derive(cls, seed: int | None, input_context: tf.distribute.InputContext | None) -> _Seeds:
        root = secrets.randbits(63) if seed is None else seed
        pipeline = input_context.input_pipeline_id if input_context else 0
        # SeedSequence mixes (seed, pipeline) into well-separated words; int64 for TF.
        words = np.random.SeedSequence([root, pipeline]).generate_state(4, np.uint32).astype(np.int64)
        return cls(int(words[0]), int(words[1]), (int(words[2]), int(words[3])))
