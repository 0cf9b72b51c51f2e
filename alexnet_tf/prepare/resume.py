"""The resume state of prepare-data: options fingerprint, finished-shard checkpoint, clean-up.

``OUTPUT/_prepare/state.json`` holds the options and a digest of the shard plan, written before
any shard; ``OUTPUT/_prepare/checkpoint.npz`` holds the finished shards (counts, skipped files)
and their merged exact statistic sums (`Checkpoint`). A shard counts as finished only when it is
in the checkpoint and its file exists under its final name; anything else is rewritten. When
the run completes, the metadata replaces all of this and ``_prepare/`` is removed. See
`alexnet_tf.prepare.convert` for the protocol.
"""

from __future__ import annotations

import dataclasses
import io
import json
import posixpath
from typing import Any

import numpy as np
import tensorflow as tf

from alexnet_tf import files, jobs
from alexnet_tf.errors import InputError
from alexnet_tf.files import output_errors, write_atomically
from alexnet_tf.prepare.shards import ShardResult
from alexnet_tf.prepare.stats import PixelStats
from alexnet_tf.records.metadata import (
    MEAN_IMAGE_FILENAME,
    METADATA_FILENAME,
    DatasetMetadata,
    SkippedFile,
    metadata_path,
)
from alexnet_tf.records.schema import SPLITS, shard_glob

STATE_DIR = "_prepare"
STATE_FILE = "state.json"
CHECKPOINT_FILE = "checkpoint.npz"


@dataclasses.dataclass(frozen=True)
class FinishedShard:
    """What the metadata needs of a shard written by an earlier (interrupted) run."""

    per_class: dict[str, int]  # wnid -> records
    skipped: list[SkippedFile]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FinishedShard:
        return cls(dict(raw["per_class"]), [SkippedFile(**entry) for entry in raw["skipped"]])


class Checkpoint:
    """The finished shards (counts, skipped files) and their merged training statistics."""

    def __init__(self, image_size: int) -> None:
        self.shards: dict[str, FinishedShard] = {}
        self.stats = PixelStats(image_size)

    def add(self, result: ShardResult) -> None:
        self.shards[result.name] = FinishedShard(result.per_class, result.skipped)
        if result.stats is not None:
            self.stats.merge(result.stats)

    def merge(self, other: Checkpoint) -> None:
        """Adds the shards of another checkpoint (a Beam job's partial result; see
        `alexnet_tf.prepare.beam_runner`)."""
        self.shards.update(other.shards)
        self.stats.merge(other.stats)

    def save(self, output: str) -> None:
        table = {name: dataclasses.asdict(shard) for name, shard in self.shards.items()}
        save_state(posixpath.join(output, STATE_DIR, CHECKPOINT_FILE), table, self.stats)

    @classmethod
    def load(cls, output: str, image_size: int) -> Checkpoint:
        """The checkpoint of an interrupted run (empty if none); its shards must still exist."""
        done = cls(image_size)
        path = posixpath.join(output, STATE_DIR, CHECKPOINT_FILE)
        if not tf.io.gfile.exists(path):
            return done
        table, done.stats = load_state(path)
        done.shards = {name: FinishedShard.from_dict(raw) for name, raw in table.items()}
        for name in sorted(done.shards):
            if not tf.io.gfile.exists(posixpath.join(output, name)):
                raise InputError(
                    f"{output}/{name} is missing, though the interrupted run had finished it (deleted?); "
                    "pass `overwrite=True` to start again",
                    ("overwrite",),
                )
        return done


def save_state(path: str, state: Any, stats: PixelStats) -> None:
    """Writes a JSON-able ``state`` and exact statistic sums to one ``.npz`` file, atomically.

    The state of an interrupted prepare-data or index-records run. The JSON is stored as
    compressed bytes: ImageNet's per-shard class counts make ~15 MB of it.
    """
    buffer = io.BytesIO()
    blob = np.frombuffer(json.dumps(state, separators=(",", ":")).encode(), np.uint8)
    np.savez_compressed(buffer, state=blob, **stats.to_arrays())
    write_atomically(path, buffer.getvalue())


def load_state(path: str) -> tuple[Any, PixelStats]:
    """What `save_state` wrote to ``path``."""
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as arrays:
        return json.loads(arrays["state"].tobytes()), PixelStats.from_arrays(arrays)


def make_directory(output: str) -> None:
    try:
        tf.io.gfile.makedirs(output)
    except tf.errors.OpError as error:
        raise InputError(f"{output}: cannot create the output directory ({error.message})") from None


def read_state(output: str) -> dict[str, Any] | None:
    path = posixpath.join(output, STATE_DIR, STATE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def write_state(output: str, state: dict[str, Any]) -> None:
    with output_errors(output):
        tf.io.gfile.makedirs(posixpath.join(output, STATE_DIR))
        write_atomically(posixpath.join(output, STATE_DIR, STATE_FILE), json.dumps(state, indent=2).encode())


def check_options(output: str, previous: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuses to resume or keep ``output`` with other options than it was prepared with."""
    jobs.check_options(
        previous,
        current,
        f"{output} was prepared with other options",
        "use the original options to resume or keep it, or pass `overwrite=True` to start again",
        ("overwrite",),
    )


def complete_metadata(output: str, options: dict[str, Any]) -> DatasetMetadata | None:
    """The metadata of a finished run with these options (None if there is none)."""
    if not tf.io.gfile.exists(metadata_path(output)):
        return None
    try:
        metadata = DatasetMetadata.load(output)
    except InputError as error:
        raise InputError(f"{error}; or pass `overwrite=True` to rebuild", (*error.parameters, "overwrite")) from None
    check_options(output, metadata.options, options)
    for split in metadata.splits.values():
        for shard in split.shards:
            if not tf.io.gfile.exists(posixpath.join(output, shard.name)):
                raise InputError(
                    f"{output}/{shard.name} is missing though {METADATA_FILENAME} lists it; pass `overwrite=True`",
                    ("overwrite",),
                )
    return metadata


def refuse_foreign_shards(output: str) -> None:
    for split in SPLITS:
        if tf.io.gfile.glob(posixpath.join(output, shard_glob(split))):
            raise InputError(
                f"{output} already holds {split} shards but no prepare-data state; use an empty "
                "directory, or pass `overwrite=True` to replace them",
                ("overwrite",),
            )


def remove_outputs(output: str) -> None:
    """What ``overwrite`` deletes: our shards, temporary files, metadata and state, nothing else."""
    patterns = [shard_glob(split) for split in SPLITS]
    patterns += [METADATA_FILENAME, MEAN_IMAGE_FILENAME]
    files.remove_temporaries(output)
    with output_errors(output):
        for pattern in patterns:
            for path in tf.io.gfile.glob(posixpath.join(output, pattern)):
                tf.io.gfile.remove(path)
        if tf.io.gfile.isdir(posixpath.join(output, STATE_DIR)):
            tf.io.gfile.rmtree(posixpath.join(output, STATE_DIR))


def remove_state(output: str) -> None:
    """Deletes ``_prepare/`` once the metadata is written."""
    with output_errors(output):
        tf.io.gfile.rmtree(posixpath.join(output, STATE_DIR))
