"""Which shard files an input pipeline reads, and reading them: the first stage of
`alexnet_tf.input.pipeline`, apart from the views it makes of the records.

`shard_files` gives each input pipeline of a `tf.distribute` strategy its share of a split's
files (or, with fewer files than pipelines, every file and every n-th record); `interleave_records`
reads files in parallel, optionally in a shuffled order, through a
`alexnet_tf.input.bad_records.RecordReader` that numbers and checks the records.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from alexnet_tf.input.bad_records import RecordReader

logger = logging.getLogger(__name__)

# Files read at once by the parallel interleave: enough shards that records from many of them
# mix before the shuffle buffer, few enough that read buffers stay small.
INTERLEAVE_CYCLE = 16


def shard_files(files: list[str], input_context: tf.distribute.InputContext | None) -> tuple[list[str], bool]:
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


def interleave_records(
    files: list[str],
    deterministic: bool | None = None,
    shuffle_seed: int | tf.Tensor | None = None,
    reader: RecordReader | None = None,
    counts: list[int] | None = None,
) -> tf.data.Dataset:
    """Records of ``files``, read by a parallel interleave of `INTERLEAVE_CYCLE` files.

    Serialized records; with a ``reader`` and the ``counts`` of records the metadata lists per
    file, ``(path, number, serialized)`` as `RecordReader.read` checks them. With
    ``shuffle_seed`` the file order is shuffled first, afresh on every pass.
    """
    if reader is None:
        names, read = tf.data.Dataset.from_tensor_slices(files), tf.data.TFRecordDataset
    else:
        names = tf.data.Dataset.from_tensor_slices((files, tf.constant(counts, tf.int64)))
        read = tf.autograph.experimental.do_not_convert(reader.read)
    if shuffle_seed is not None:
        names = names.shuffle(len(files), seed=shuffle_seed)
    return names.interleave(
        read,
        cycle_length=min(len(files), INTERLEAVE_CYCLE),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
