"""Which images go into which shard, and writing one shard (the unit of work and of resume).

The assignment is a pure function of the item list, the shard count and the seed
(`assign_shards`): a fixed-seed shuffle of the whole split, then round-robin, so shards differ
in size by at most one record before skipped files, and every shard mixes classes in a random
order. A rerun after an interruption therefore knows exactly what each missing shard must hold.

`write_shard` writes a shard's records under a temporary name (`alexnet_tf.files`: hidden, so
no reader's ``train*`` pattern matches it) and renames it when complete, so a shard under its
final name is always whole. It runs inside
worker processes (see `alexnet_tf.prepare.workers`) and returns the shard's counts, skipped files
and pixel statistics to the parent.
"""

from __future__ import annotations

import collections
import dataclasses
import posixpath
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import numpy as np
import tensorflow as tf

from alexnet_tf.files import atomic_path, output_errors
from alexnet_tf.prepare import images
from alexnet_tf.prepare.stats import PixelStats
from alexnet_tf.records.metadata import SkippedFile
from alexnet_tf.records.schema import serialize_example, shard_name

T = TypeVar("T")


class ShardItem(NamedTuple):
    path: str
    class_index: int
    for_stats: bool  # counted in the training statistics (all, or the --stats-sample subset)


@dataclasses.dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    num_shards: int
    items: tuple[ShardItem, ...]

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index, self.num_shards)


@dataclasses.dataclass(frozen=True)
class ShardContext:
    """What every shard task shares (sent to each worker once)."""

    output: str
    run_id: str | None  # names this run's temporary files; None: a fresh id per shard written (Beam,
    # where a runner may attempt one shard twice at once: each attempt then writes its own file)
    classes: tuple[tuple[str, str], ...]  # (wnid, name) by class index
    label_offset: int
    image_options: images.ImageOptions


@dataclasses.dataclass
class ShardResult:
    name: str
    per_class: dict[str, int]  # wnid -> records
    skipped: list[SkippedFile]
    stats: PixelStats | None  # over the shard's records marked for_stats; None when there are none


def assign_shards(items: Sequence[T], num_shards: int, seed: int, stream: int) -> list[list[T]]:
    """Deals a fixed-seed shuffle of ``items`` round-robin into ``num_shards`` lists.

    ``stream`` separates the random streams of different splits for the same seed.
    """
    order = np.random.default_rng([seed, stream]).permutation(len(items))
    shuffled = [items[i] for i in order]
    return [shuffled[i::num_shards] for i in range(num_shards)]


def write_shard(context: ShardContext, task: ShardTask, progress: Callable[[int], None]) -> ShardResult:
    """Converts the task's files into one TFRecord shard; a bad file is skipped with its reason."""
    final = posixpath.join(context.output, task.name)
    options = context.image_options
    stats = PixelStats(options.image_size) if any(item.for_stats for item in task.items) else None
    per_class: collections.Counter[str] = collections.Counter()
    skipped = []
    with images.pixel_limit(options.max_pixels), output_errors(final), atomic_path(final, context.run_id) as temp:
        with tf.io.TFRecordWriter(temp) as writer:
            for item in task.items:
                try:
                    image = images.prepare_image(_read(item.path), options, for_stats=item.for_stats)
                except images.BadImage as error:
                    skipped.append(SkippedFile(item.path, task.split, str(error)))
                    progress(1)
                    continue
                wnid, name = context.classes[item.class_index]
                writer.write(
                    serialize_example(
                        encoded=image.encoded,
                        height=image.height,
                        width=image.width,
                        label=item.class_index + context.label_offset,
                        synset=wnid,
                        text=name,
                        filename=posixpath.basename(item.path),
                    )
                )
                per_class[wnid] += 1
                if image.stats_image is not None:
                    stats.add(image.stats_image)
                progress(1)
    return ShardResult(
        name=task.name,
        per_class=dict(per_class),
        skipped=skipped,
        stats=stats if stats is not None and stats.images else None,
    )


def _read(path: str) -> bytes:
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except (tf.errors.OpError, OSError) as error:
        raise images.BadImage(f"unreadable ({getattr(error, 'message', error)})") from None
