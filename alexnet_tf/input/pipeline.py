"""The `tf.data` input pipeline: the paper's training augmentation and test-time views.

One object, `InputPipeline`, is what a training, evaluation or export run holds. It loads a
prepared dataset once (``metadata.json`` and ``mean_image.npy``, written by
``alexnet-tf prepare-data``) and gives:

* `InputPipeline.train_dataset`: random 224×224 crops of the 256×256 images and their mirror
  images, PCA lighting, mean subtraction (§4.1, §2), shuffled and repeated forever, for one
  input context of a `tf.distribute` strategy;
* `InputPipeline.eval_dataset`: one pass of a split as centre crops, or the ten test views
  (§4.1) with a leading dimension of 10;
* `InputPipeline.view_normalization`: with ``normalize_in_model=True``, the
  `alexnet_tf.network.layers.ViewNormalization` layer that finishes its views, mean already set.

The stages are separate modules, as Model Garden separates decoder and parser:
`alexnet_tf.input.decode` (parse the record, decode the JPEG or only the crop window),
`alexnet_tf.input.views` (make the float or uint8 views), `alexnet_tf.input.augment` (pure,
seedable functions on one image), `alexnet_tf.input.shards` (each input pipeline's files, read
in parallel). This module shuffles, seeds, batches and prefetches.

Per training record (float views): parse; draw the view (crop corner, mirror bit, lighting
alpha) from the record's seed; decode only the crop window (256×256 records) or the whole
record brought to §2's format; mirror the uint8 window; cast, subtract the mean window (mirrored
with the image) and add the lighting offset; cast to the output dtype. All of it runs per record
inside the parallel ``map``: doing the float work on whole batches made the pipeline about half
as fast on CPU (per-record tensors stay in cache, batch tensors do not). With
``normalize_in_model=True`` the per-record work stops at the decoded uint8 crop and the rest
happens in the model (see `alexnet_tf.input.views`).

Shards are read in order by `alexnet_tf.input.bad_records.RecordReader`, which numbers the
records and checks each shard holds as many as the metadata lists; with it and the decoder's
check of every image header, a bad record stops the pipeline with an error naming its shard and
number, or with ``skip_bad_records`` is left out and noted in `InputPipeline.skipped` (per split).

Training randomness is stateless, so ``deterministic=True`` with a seed reproduces every
batch, and every pass over the data draws fresh views (§4.1: alpha "drawn once per image per
pass"). An unseeded pipeline draws a seed and logs it (`InputPipeline.seed`), so a run can be
reproduced.

The functions given to tf.data here and in `alexnet_tf.input.shards` are built with autograph off
(`tf.autograph.experimental.do_not_convert`; datasets built inside them inherit it): the input
code is written in TensorFlow ops (``tf.cond``, ``tf.where``), never a Python ``if`` on a tensor,
and autograph's conversion of its Python source cost fit about 1.3 s of start-up
(`tests/test_train.py` checks that nothing of ours is converted).
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.constants import MEAN_CHANNEL, MEAN_IMAGE
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.input.bad_records import RecordReader, SkippedRecords
from alexnet_tf.input.decode import LABEL, RecordDecoder
from alexnet_tf.input.options import InputOptions
from alexnet_tf.input.shards import interleave_records, shard_files
from alexnet_tf.input.views import FloatViews, Statistics, Uint8Views, Views
from alexnet_tf.network.layers import ViewNormalization
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import DatasetMetadata, SplitInfo, load_mean_image, metadata_path

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class InputConfig(InputOptions):
    """What the input pipeline reads and how it transforms it: the `InputOptions` (a recipe's
    ``input`` section: shuffle, labels, mean, lighting, crop size, uint8 views, determinism),
    plus what a run supplies. Defaults are the paper's.

    Attributes:
      data_dir: directory (local or ``gs://``) with the shards, ``metadata.json`` and
        ``mean_image.npy`` written by prepare-data.
      batch_size: global batch size (§5: 128); with an input context each replica gets
        ``batch_size / num_replicas_in_sync``.
      dtype: output image dtype: "float32", or "bfloat16" / "float16" for mixed precision.
      seed: seed for file and record shuffling and the augmentation when a call of
        `InputPipeline.train_dataset` gives none (a run passes one per epoch); None draws one.
      skip_bad_records: leave out records that cannot be read or decoded (the rest of a
        truncated shard, an image that is not a JPEG of the declared size, damaged JPEG data),
        noting each in `InputPipeline.skipped`, instead of failing at the first. Costs a 1/8-scale
        decode of every record (`alexnet_tf.input.bad_records`).
    """

    data_dir: str
    batch_size: int = paper.BATCH_SIZE
    dtype: str = "float32"
    seed: int | None = None
    skip_bad_records: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise invalid("batch_size", self.batch_size, "a positive integer")
        if self.dtype not in DTYPES:
            raise invalid("dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        if self.deterministic and self.seed is None:
            raise invalid("seed", self.seed, "an integer when deterministic=True")


# Crops under this fraction of the records' side are worth a note (the paper's is 224/256 = 0.875).
MIN_CROP_COVERAGE = 0.75


class InputPipeline:
    """A prepared dataset, loaded once, and the datasets and layer a run takes from it.

    Args:
      config: what to read and how to transform it (`InputConfig`).
      metadata: the dataset's metadata, if already loaded; else read from ``config.data_dir``.

    Raises:
      InputError: missing or unreadable metadata or mean image, or statistics the config needs
        (per-channel mean) that the metadata lacks.
    """

    def __init__(self, config: InputConfig, metadata: DatasetMetadata | None = None) -> None:
        self.config = config
        self.metadata = DatasetMetadata.load(config.data_dir) if metadata is None else metadata
        stats = self.metadata.stats
        if config.mean == MEAN_CHANNEL and stats is None:
            raise InputError(
                f"{metadata_path(config.data_dir)} has no statistics for mean='channel': re-run prepare-data "
                "with statistics, or use mean='none'"
            )
        mean_image = load_mean_image(config.data_dir) if config.mean == MEAN_IMAGE else None
        self.seed = secrets.randbits(31) if config.seed is None else config.seed
        if config.seed is None:
            logger.info("input pipeline seed %d (set InputConfig.seed to reproduce this run's data order)", self.seed)
        self.decoder = RecordDecoder(self.metadata, config.label_offset)
        # Per split, the bad records this pipeline's datasets left out (with skip_bad_records).
        self.skipped = {split: SkippedRecords() for split in self.metadata.splits}
        self.statistics = Statistics(
            config.mean,
            self.decoder.image_size,
            mean_image,
            stats,
            lighting_stddev=paper.PCA_LIGHTING_STD * config.lighting_strength,
        )
        view_type = Uint8Views if config.normalize_in_model else FloatViews
        self.views: Views = view_type(self.decoder, self.statistics, config.crop_size, config.dtype)

    def crop_coverage_note(self) -> str | None:
        """A one-line note when the crops cover much less of each record than the paper's 224 of
        256 (as the demo recipe's 112-pixel crops do of 256-pixel records), else None."""
        image_size, crop_size = self.decoder.image_size, self.config.crop_size
        if crop_size >= MIN_CROP_COVERAGE * image_size:
            return None
        return (
            f"note: input.crop_size={crop_size} crops cover {crop_size / image_size:.0%} of the "
            f"{image_size}x{image_size} records' side (the paper: {paper.CROP_SIZE} of {paper.IMAGE_SIZE}); "
            f"set input.crop_size={round(image_size * paper.CROP_SIZE / paper.IMAGE_SIZE)} to see whole images"
        )

    def check_training(self, input_context: tf.distribute.InputContext | None = None) -> None:
        """Raises `InputError` for what would stop the training datasets, without building them
        (fit calls it before writing anything): a missing shard of either split, no statistics
        for PCA lighting, a batch that does not split over the replicas."""
        if self.config.lighting_strength > 0 and self.statistics.eigenvalues is None:
            raise InputError(
                f"{metadata_path(self.config.data_dir)} has no statistics for PCA lighting: re-run prepare-data "
                "with statistics, or set lighting_strength=0"
            )
        self.files(schema.TRAIN)
        if schema.VALIDATION in self.metadata.splits:
            self.files(schema.VALIDATION)
        self._batch_size(input_context)

    def num_records(self, split: str = schema.TRAIN) -> int:
        """Records in ``split`` (`InputError` if the metadata has no such split)."""
        return self._split(split).num_records

    def steps_per_epoch(self, split: str = schema.TRAIN) -> int:
        """Full global batches in one pass over ``split`` (the training dataset drops the rest)."""
        return self.num_records(split) // self.config.batch_size

    def files(self, split: str) -> list[str]:
        """Paths of ``split``'s shards as the metadata lists them (in its ``records_dir`` if it
        names one), after checking they exist."""
        shards = self._split(split).shards
        directory = self.metadata.shards_dir(self.config.data_dir)
        present = set(tf.io.gfile.listdir(directory)) if tf.io.gfile.isdir(directory) else set()
        missing = [shard.name for shard in shards if shard.name not in present]
        if missing:
            raise InputError(
                f"{len(missing)} shard(s) listed in {metadata_path(self.config.data_dir)} are missing, "
                f"e.g. {posixpath.join(directory, missing[0])}: re-run prepare-data (or index-records)"
            )
        return [posixpath.join(directory, shard.name) for shard in shards]

    def train_dataset(
        self,
        input_context: tf.distribute.InputContext | None = None,
        skip_batches: int = 0,
        seed: int | None = None,
        split_by_file: bool = False,
    ) -> tf.data.Dataset:
        """Batches of training views and int32 labels, repeated forever.

        Float views: ``(images [b, 224, 224, 3], labels [b])``; with ``normalize_in_model``:
        ``({"image", "offset", "flip", "lighting"}, labels)``. Each pass over this pipeline's
        share of the training split is a fresh shuffle with fresh views. Batches are full
        (``drop_remainder``): one epoch is `steps_per_epoch` steps. With ``input_context``
        (``strategy.distribute_datasets_from_function``), the batch is the per-replica batch and
        this pipeline reads only its share of the data (`shard_files`).

        ``skip_batches`` drops this pipeline's first batches before anything is decoded, with
        the same views afterwards as without it (records and batches keep the numbers that seed
        their views): how a resumed run continues mid-epoch without redoing the input work.

        ``seed`` (default: the pipeline's, `InputPipeline.seed`) seeds the file and record
        shuffles and the views, so one pipeline gives each epoch of a run its own stream.

        ``split_by_file``: built with the shard files as its first source, for a tf.data
        service, whose dynamic sharding splits a dataset at its first source (otherwise the
        one-seed table `train_epochs` shares with this stream: one worker would make it all).
        Its shuffles then pair their seeds with TensorFlow's global seed, if one is set, so the
        stream is that seed's own but not the same as without ``split_by_file``.
        """
        words = _Seeds.derive(self.seed if seed is None else seed, input_context).words()
        if split_by_file:
            self.check_training(input_context)
            words_tensor, skip = tf.constant(words, tf.int64), tf.constant(skip_batches, tf.int64)
            return self._finish(self._epoch_batches(words_tensor, skip, input_context), input_context)
        return self._epochs([words], [skip_batches], None, input_context)

    def train_epochs(
        self,
        seeds: Sequence[int],
        batches_per_epoch: int,
        input_context: tf.distribute.InputContext | None = None,
        skip_batches: int = 0,
    ) -> tf.data.Dataset:
        """Several epochs of training batches, one after the other, in one dataset: epoch ``i``
        is the first ``batches_per_epoch`` batches of ``train_dataset(seed=seeds[i])``, the first
        epoch after its first ``skip_batches``.

        What fit iterates: the dataset is traced once and read by one iterator for the whole run,
        instead of a new dataset and iterator per epoch (their Python tracing and start-up cost
        about a second per epoch, which on small data rivalled the epoch's steps), and the next
        epoch's first batches are prepared while the loop validates and saves.
        """
        if batches_per_epoch < 1:
            raise invalid("batches_per_epoch", batches_per_epoch, "a positive integer")
        if not seeds:
            raise invalid("seeds", seeds, "a list of one seed per epoch, at least one")
        words = [_Seeds.derive(seed, input_context).words() for seed in seeds]
        skips = [skip_batches] + [0] * (len(seeds) - 1)
        return self._epochs(words, skips, batches_per_epoch, input_context)

    def _epochs(
        self,
        words: list[list[int]],
        skips: list[int],
        batches_per_epoch: int | None,
        input_context: tf.distribute.InputContext | None,
    ) -> tf.data.Dataset:
        """Epoch after epoch (`_epoch_batches` of each row of `_Seeds` ``words``, after its
        ``skips`` batches), each cut at ``batches_per_epoch`` if given; prefetched."""
        self.check_training(input_context)  # in one line here, not from inside the traced function

        @tf.autograph.experimental.do_not_convert
        def one_epoch(seed_words: tf.Tensor, skip: tf.Tensor) -> tf.data.Dataset:
            # The shuffles' seeds come from ``seed_words`` alone, not from TensorFlow's global seed
            # (with a global seed of 0, TF's seed pairing cannot even take a tensor seed).
            tf.compat.v1.get_default_graph().seed = None
            batches = self._epoch_batches(seed_words, skip, input_context)
            return batches if batches_per_epoch is None else batches.take(batches_per_epoch - skip)

        table = tf.data.Dataset.from_tensor_slices((tf.constant(words, tf.int64), tf.constant(skips, tf.int64)))
        return self._finish(table.flat_map(one_epoch), input_context)

    def _epoch_batches(
        self, seed_words: tf.Tensor, skip_batches: tf.Tensor, input_context: tf.distribute.InputContext | None
    ) -> tf.data.Dataset:
        """The endless training batches of one seed (`_Seeds` words as a tensor), after the first
        ``skip_batches``; not yet prefetched (`_finish`)."""
        records = self.records(schema.TRAIN, input_context, file_shuffle_seed=seed_words[0])
        dataset = records.shuffle(self.config.shuffle_buffer, seed=seed_words[1]).repeat().enumerate()
        dataset = dataset.skip(skip_batches * self._batch_size(input_context))
        key = seed_words[2:]
        views = self.views

        @tf.autograph.experimental.do_not_convert
        def train_view(index: tf.Tensor, record: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tuple[Any, tf.Tensor]:
            path, number, serialized = record
            features = self.decoder.parse(serialized, where=(path, number))
            return views.train(features, key, index), features[LABEL]

        dataset = dataset.map(train_view, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(self._batch_size(input_context), drop_remainder=True)
        if views.PER_BATCH:
            dataset = dataset.enumerate(start=skip_batches).map(
                tf.autograph.experimental.do_not_convert(
                    lambda index, batch: (views.finish_batch(batch[0], key, index), batch[1])
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return dataset

    def eval_dataset(
        self,
        split: str = schema.VALIDATION,
        ten_crop: bool = False,
        input_context: tf.distribute.InputContext | None = None,
        cache: bool = False,
    ) -> tf.data.Dataset:
        """One pass over ``split``: centre crops ``[b, 224, 224, 3]``, or with ``ten_crop`` the
        ten views ``[b, 10, 224, 224, 3]``, so that evaluation can average the ten softmax
        outputs over axis 1 (§4.1). The last batch may be smaller.

        ``cache`` keeps the views in memory after the first pass, so that later passes (fit's
        validation after every epoch) read and decode nothing: `view_bytes` per record.
        """
        make_view = self.views.ten_crop if ten_crop else self.views.center

        @tf.autograph.experimental.do_not_convert
        def eval_view(path: tf.Tensor, number: tf.Tensor, serialized: tf.Tensor) -> tuple[Any, tf.Tensor]:
            features = self.decoder.parse(serialized, where=(path, number))
            return make_view(features), features[LABEL]

        records = self.records(split, input_context, file_shuffle_seed=None)
        dataset = records.map(eval_view, num_parallel_calls=tf.data.AUTOTUNE)
        if cache:
            dataset = dataset.cache()
        return self._finish(dataset.batch(self._batch_size(input_context)), input_context)

    def view_bytes(self, ten_crop: bool = False) -> int:
        """Bytes of one record's evaluation view(s) as this pipeline yields them."""
        pixels = self.config.crop_size**2 * 3 * (10 if ten_crop else 1)
        return pixels * (1 if self.config.normalize_in_model else tf.as_dtype(self.config.dtype).size)

    def view_normalization(self, **kwargs: Any) -> ViewNormalization:
        """The layer that finishes this pipeline's uint8 views, with the dataset's mean set.

        Its output dtype is ``config.dtype`` (as a mixed policy for bfloat16 / float16).
        """
        return self.statistics.view_normalization(self.config.dtype, **kwargs)

    def _batch_size(self, input_context: tf.distribute.InputContext | None) -> int:
        """This pipeline's batch: the global batch, or one replica's share of it."""
        if input_context is None:
            return self.config.batch_size
        try:
            return input_context.get_per_replica_batch_size(self.config.batch_size)
        except ValueError:
            raise invalid(
                "batch_size",
                self.config.batch_size,
                f"a multiple of the {input_context.num_replicas_in_sync} replicas in sync",
            ) from None

    def _split(self, split: str) -> SplitInfo:
        if split not in self.metadata.splits or not self.metadata.splits[split].shards:
            listed = ", ".join(self.metadata.splits) or "none"
            raise InputError(f"{metadata_path(self.config.data_dir)} lists no '{split}' shards (splits: {listed})")
        return self.metadata.splits[split]

    def records(
        self,
        split: str,
        input_context: tf.distribute.InputContext | None = None,
        file_shuffle_seed: int | tf.Tensor | None = None,
    ) -> tf.data.Dataset:
        """``(shard path, record number, serialized record)`` of this input pipeline's share of
        ``split`` (`shard_files`), checked by a `RecordReader` (one pass, no shuffle but of the
        files)."""
        listed = dict(zip(self.files(split), (shard.records for shard in self._split(split).shards), strict=True))
        files, shard_records = shard_files(list(listed), input_context)
        counts = [listed[path] for path in files]
        skipped = self.skipped[split] if self.config.skip_bad_records else None
        reader = RecordReader(self.metadata.schema, self.metadata.image_size, self.decoder.most_pixels, skipped)
        if not shard_records:
            return interleave_records(files, shuffle_seed=file_shuffle_seed, reader=reader, counts=counts)
        # Every pipeline must see the same record order for every-n-th-record sharding to split
        # the data without overlap: no file shuffle, a deterministic interleave.
        records = interleave_records(files, deterministic=True, reader=reader, counts=counts)
        return records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

    def _finish(self, dataset: tf.data.Dataset, input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
        """Prefetches, with this config's determinism, and tells tf.distribute not to shard again."""
        options = tf.data.Options()
        options.deterministic = self.config.deterministic
        if input_context is not None:
            # This pipeline shards by itself; stop tf.distribute from sharding again.
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


@dataclasses.dataclass(frozen=True)
class _Seeds:
    """Independent seeds for one input pipeline, all derived from the config's seed."""

    file_shuffle: int
    record_shuffle: int
    augment_key: tuple[int, int]

    def words(self) -> list[int]:
        return [self.file_shuffle, self.record_shuffle, *self.augment_key]

    @classmethod
    def derive(cls, seed: int, input_context: tf.distribute.InputContext | None) -> _Seeds:
        pipeline = input_context.input_pipeline_id if input_context else 0
        # SeedSequence mixes (seed, pipeline) into well-separated words; int64 for TF.
        words = np.random.SeedSequence([seed, pipeline]).generate_state(4, np.uint32).astype(np.int64)
        return cls(int(words[0]), int(words[1]), (int(words[2]), int(words[3])))
