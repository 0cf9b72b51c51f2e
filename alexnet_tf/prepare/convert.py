"""`prepare_dataset`: ImageNet or image folders to shuffled, balanced TFRecord shards (§2).

The importable function behind ``alexnet-tf prepare-data`` and ``tools/make_tfrecords.py``. (Its
length is the job's whole order in one place, from the checks to ``metadata.json`` written last,
so that what a kill at any line leaves is read top to bottom; each step's work is in a sibling.)
It lists the source (`alexnet_tf.prepare.sources`), deals the files into shards with a fixed seed
(`alexnet_tf.prepare.shards`), converts the shards on worker processes (`alexnet_tf.prepare.workers`)
with a progress bar, and writes beside the shards:

- ``metadata.json`` (`alexnet_tf.records.metadata.DatasetMetadata`): classes, per-split and
  per-class counts, shards with their record counts, every skipped file with its reason, the
  options, and the training statistics (mean RGB; eigenvalues/eigenvectors of the RGB/255
  covariance, §4.1) computed exactly over the stored training pixels (`alexnet_tf.prepare.stats`);
- ``mean_image.npy``: the 256×256×3 mean training image, 0–255 scale (§2).

Restartable (state in `alexnet_tf.prepare.resume`). Before any shard is written,
``_prepare/state.json`` records the options (the fingerprint) and a digest of the shard plan.
Each shard is written under a temporary name and renamed when whole; the parent process records
finished shards, with their counts, skipped files and exact statistic sums, in
``_prepare/checkpoint.npz`` (at most every `CHECKPOINT_SECONDS`, and on Ctrl-C, SIGTERM or an
error: `alexnet_tf.jobs.Job`).
Re-running the same command after Ctrl-C or kill -9 removes temporary files, keeps every shard
that is in the checkpoint, and writes the rest again — shards are a pure function of the file
list, options and seed, so nothing is duplicated or lost, and shards and statistics are
byte-identical to one uninterrupted run's. A shard finished after the last checkpoint is simply
rewritten. Different options, or a changed file list, are refused unless ``overwrite`` (which
deletes the earlier output). When all shards are done the metadata is written and ``_prepare/``
removed; re-running then reports that there is nothing to do.

``runner="beam"`` writes the same shards as one Apache Beam job instead of the worker processes
(`alexnet_tf.prepare.beam_runner`): the same plan, shard function and checkpoint type, so the
same bytes. Its results reach the checkpoint only when the whole job has succeeded: a killed job
is redone by the next run (shards a local run had checkpointed are kept).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import os
import posixpath
import signal
import time
import uuid
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from alexnet_tf import errors, files, jobs, locks, paper, preemption
from alexnet_tf.constants import (
    BEAM_RUNNER,
    DEFAULT_TRAIN_SHARDS,
    DEFAULT_VALIDATION_SHARDS,
    LOCAL_RUNNER,
    MIN_INPUT_SIZE,
)
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.files import output_errors
from alexnet_tf.jobs import CHECKPOINT_SECONDS
from alexnet_tf.prepare import images, resume, runners
from alexnet_tf.prepare.shards import (
    ShardContext,
    ShardItem,
    ShardResult,
    ShardTask,
    assign_shards,
    write_shard,
)
from alexnet_tf.prepare.sources import Source, discover
from alexnet_tf.prepare.streams import Stream
from alexnet_tf.prepare.workers import default_workers, run_tasks
from alexnet_tf.records.metadata import (
    METADATA_FILENAME,
    DatasetMetadata,
    ShardInfo,
    SplitInfo,
    save_mean_image,
)
from alexnet_tf.records.schema import SPLITS, TRAIN

# Fields that do not change what is written, so a rerun may change them (the output directory
# may be moved between runs; both runners write the same shards).
_RUN_ONLY_OPTIONS = frozenset({"output", "workers", "overwrite", "progress", "runner", "beam_options"})


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Everything `prepare_dataset` needs; the CLI flags map one to one onto these fields.

    Attributes:
        source: dataset root (ILSVRC-2012 or folders per class; see `alexnet_tf.prepare.sources`).
        output: directory for the shards and metadata (created if missing; may be ``gs://``).
        train_shards / validation_shards: shard counts (fewer when a split has fewer files).
        val_fraction: fraction of each training class used for validation when there is no
            validation folder (0: none).
        val_labels: labels for a flat validation folder (``LOC_val_solution.csv`` or one wnid
            per line in file-name order).
        synsets: ``wnid name`` lines naming the classes (default ``LOC_synset_mapping.txt``).
        limit_per_class: at most this many files per class and split (a seeded random subset).
        stats_sample: compute the statistics over a seeded random subset of this many training
            files instead of all of them.
        jpeg_quality: quality of the re-encoded JPEGs (1–100).
        keep_geometry: store images at their original size instead of the §2 256×256 crop.
        image_size: side of the stored square images. §2: 256; a smaller side (a named
            deviation) makes quick experiments such as ``alexnet-tf demo`` faster.
        label_offset: 0 (labels 0..N-1) or 1 (Model Garden / TF-Slim: 1..N, 0 = background).
        seed: seeds the shuffle, the splits and the subsets.
        max_pixels: refuse images with more pixels than this (decompression bombs).
        workers: worker processes (default: the CPUs available to this process).
        overwrite: delete an earlier output in ``output`` instead of refusing or resuming it.
        progress: show a progress bar on stderr.
        runner: ``local`` (the worker processes) or ``beam`` (an Apache Beam job; see
            `alexnet_tf.prepare.runners`).
        beam_options: with ``beam``: Beam's pipeline options, ``"key=value,..."`` (e.g.
            ``"runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"``).
    """

    source: str
    output: str
    train_shards: int = DEFAULT_TRAIN_SHARDS
    validation_shards: int = DEFAULT_VALIDATION_SHARDS
    val_fraction: float = 0.0
    val_labels: str | None = None
    synsets: str | None = None
    limit_per_class: int | None = None
    stats_sample: int | None = None
    jpeg_quality: int = images.DEFAULT_JPEG_QUALITY
    keep_geometry: bool = False
    image_size: int = paper.IMAGE_SIZE
    label_offset: int = 0
    seed: int = 0
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    workers: int | None = None
    overwrite: bool = False
    progress: bool = True
    runner: str = LOCAL_RUNNER
    beam_options: str | None = None

    def __post_init__(self) -> None:
        runners.check(self.runner, self.beam_options, self.workers)
        checks = [
            (self.train_shards >= 1, "train_shards", "at least 1"),
            (self.validation_shards >= 1, "validation_shards", "at least 1"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction", "in [0, 1)"),
            (self.limit_per_class is None or self.limit_per_class >= 1, "limit_per_class", "at least 1"),
            (self.stats_sample is None or self.stats_sample >= 1, "stats_sample", "at least 1"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality", "in 1..100"),
            (self.label_offset in (0, 1), "label_offset", "0 or 1"),
            (self.max_pixels >= 1, "max_pixels", "at least 1"),
            (self.image_size >= MIN_INPUT_SIZE, "image_size", f"at least {MIN_INPUT_SIZE}"),
            (self.workers is None or self.workers >= 1, "workers", "at least 1"),
        ]
        for ok, name, requirement in checks:
            if not ok:
                raise invalid(name, getattr(self, name), requirement)

    def options(self) -> dict[str, Any]:
        """The options that determine the output: compared on resume, stored in the metadata."""
        fields = dataclasses.asdict(self)
        for key in ("source", "val_labels", "synsets"):
            if fields[key] is not None and "://" not in fields[key]:
                fields[key] = os.path.abspath(fields[key])
        return {k: v for k, v in sorted(fields.items()) if k not in _RUN_ONLY_OPTIONS}

    def image_options(self) -> images.ImageOptions:
        return images.ImageOptions(
            image_size=self.image_size,
            keep_geometry=self.keep_geometry,
            jpeg_quality=self.jpeg_quality,
            max_pixels=self.max_pixels,
        )


@dataclasses.dataclass
class PrepareReport:
    """What `prepare_dataset` did: the metadata written, and this run's work."""

    metadata: DatasetMetadata
    output: str
    processed: int  # source files read in this run
    resumed_shards: int  # shards an earlier, interrupted run had completed
    seconds: float
    notes: list[str]  # things worth telling the user (e.g. fewer shards than requested)
    up_to_date: bool = False  # the output was already complete; nothing was done
    # Files/s from the first converted file to the last: the rate without listing, planning and
    # worker start-up, i.e. what a long run converges to. None when too little was converted.
    steady_rate: float | None = None

    def summary(self) -> str:
        """The one-line summary the CLI prints at the end."""
        counts = " and ".join(
            f"{split.num_records:,} {name} records in {len(split.shards)} shards"
            for name, split in self.metadata.splits.items()
        )
        skipped = f"{len(self.metadata.skipped)} files skipped (reasons in {METADATA_FILENAME})"
        if self.up_to_date:
            done = f"{self.output} is already complete: {counts}; {skipped}; nothing to do"
            return errors.worded(f"{done} (`overwrite=True` rebuilds it)", ("overwrite",))
        rate = self.processed / max(self.seconds, 1e-9)
        duration = datetime.timedelta(seconds=round(self.seconds))
        kept = self.resumed_shards
        resumed = f"; {kept} shard{'s' * (kept != 1)} kept from the interrupted run" if kept else ""
        return (
            f"Wrote {counts} to {self.output}; {skipped}; this run: {self.processed:,} files in "
            f"{duration} ({rate:,.0f} files/s){resumed}"
        )


def prepare_dataset(config: PrepareConfig) -> PrepareReport:
    """Converts ``config.source`` into TFRecord shards and metadata in ``config.output``.

    Resumes an interrupted run with the same options (see the module docstring). Raises
    `InputError` for bad input, `alexnet_tf.prepare.workers.WorkerError` if a worker dies, and
    `alexnet_tf.preemption.Stopped` on Ctrl-C or SIGTERM, after recording the finished shards.
    """
    started = time.monotonic()
    if config.runner == BEAM_RUNNER:  # before anything is listed or written: Beam installed, its options valid
        runners.load_beam().pipeline_options(config.beam_options)
    output = config.output.rstrip("/") or "/"
    source = None
    if not tf.io.gfile.isdir(output):
        source = _discover(config, output)
        resume.make_directory(output)  # only now: an output inside the dataset must not become a class
    # One run per output (`alexnet_tf.locks`), from before anything in it is read or deleted.
    with locks.lock_directory(output, "prepare-data"):
        return _prepare_locked(config, output, source, started)


def _prepare_locked(config: PrepareConfig, output: str, source: Source | None, started: float) -> PrepareReport:
    """`prepare_dataset` under the output's lock; ``source`` if already discovered."""
    options = config.options()
    if config.overwrite:
        resume.remove_outputs(output)
    state = resume.read_state(output)
    if state is None:
        complete = resume.complete_metadata(output, options)
        if complete is not None:
            shards = sum(len(s.shards) for s in complete.splits.values())
            return PrepareReport(complete, output, 0, shards, time.monotonic() - started, [], up_to_date=True)
        resume.refuse_foreign_shards(output)
    else:
        resume.check_options(output, state["options"], options)

    if source is None:
        source = _discover(config, output)
    tasks, digest, notes = _plan(source, config)
    if state is None:
        resume.write_state(output, {"options": options, "digest": digest})
    elif state["digest"] != digest:
        raise InputError(
            f"the files under {config.source} changed since the interrupted run in {output}; "
            "pass `overwrite=True` to start again",
            ("overwrite",),
        )
    files.remove_temporaries(output)
    done = resume.Checkpoint.load(output, config.image_size)
    todo = [task for task in tasks if task.name not in done.shards]
    convert = _convert_on_beam if config.runner == BEAM_RUNNER else _convert
    processed, steady_rate = convert(config, source, todo, done, output)

    metadata = _metadata(source, tasks, done, config, options)
    if metadata.splits[TRAIN].num_records == 0:
        first = metadata.skipped[0]
        raise InputError(
            f"{config.source}: none of the {len(source.splits[TRAIN]):,} training files is a readable "
            f"image (e.g. {first.path}: {first.reason})"
        )
    notes.extend(_classes_without_records(source, metadata))
    for name, split in metadata.splits.items():
        empty = [shard.name for shard in split.shards if shard.records == 0]
        if empty:
            listed = ", ".join(empty[:3]) + (", ..." if len(empty) > 3 else "")
            notes.append(f"{name}: {len(empty)} shards are empty, all their files were skipped ({listed})")
    with output_errors(output):
        if done.stats.images:
            save_mean_image(output, done.stats.mean_image())
        metadata.save(output)
        resume.remove_state(output)
    return PrepareReport(
        metadata,
        output,
        processed,
        resumed_shards=len(tasks) - len(todo),
        seconds=time.monotonic() - started,
        notes=[_source_note(source), *notes],
        steady_rate=steady_rate,
    )


def _discover(config: PrepareConfig, output: str) -> Source:
    """The source's files; refuses an output inside its class folders (whose shards would be
    "images")."""
    source = discover(
        config.source,
        val_labels=config.val_labels,
        synsets=config.synsets,
        val_fraction=config.val_fraction,
        limit_per_class=config.limit_per_class,
        seed=config.seed,
    )
    _refuse_output_inside(output, source)
    return source


def _classes_without_records(source: Source, metadata: DatasetMetadata) -> list[str]:
    """A warning naming the training class folders all of whose files were skipped (unreadable):
    such a class would otherwise have no records without a word (an empty folder is refused)."""
    per_class = metadata.splits[TRAIN].per_class
    empty = [posixpath.join(source.folders[0], c.wnid) for c in source.classes if per_class[c.wnid] == 0]
    if not empty:
        return []
    listed = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
    has, its = ("has", "its") if len(empty) == 1 else ("have", "their")
    return [
        f"warning: {len(empty)} of {len(source.classes)} classes {has} no training records, all {its} files were "
        f"skipped (reasons in {METADATA_FILENAME}): {listed}"
    ]


def _source_note(source: Source) -> str:
    counts = ", ".join(f"{len(items):,} {split}" for split, items in source.splits.items())
    return f"{len(source.classes)} classes; {counts} files; validation labels: {source.validation_labels}"


def _plan(source: Source, config: PrepareConfig) -> tuple[list[ShardTask], str, list[str]]:
    """The shard tasks, a digest of them (to detect a changed file list on resume), and notes."""
    tasks, notes = [], []
    for split in SPLITS:
        items = source.splits.get(split)
        if not items:
            continue
        requested = config.train_shards if split == TRAIN else config.validation_shards
        num_shards = min(requested, len(items))
        if num_shards < requested:
            notes.append(
                f"{split}: {len(items)} files for {requested} shards; wrote {num_shards} shards of one file each"
            )
        for_stats = _stats_selection(len(items), config) if split == TRAIN else np.zeros(len(items), bool)
        shard_items = [
            ShardItem(item.path, item.class_index, bool(f)) for item, f in zip(items, for_stats, strict=True)
        ]
        for index, chunk in enumerate(assign_shards(shard_items, num_shards, config.seed, Stream.shards(split))):
            tasks.append(ShardTask(split, index, num_shards, tuple(chunk)))
    digest = hashlib.sha256()
    for task in tasks:
        for item in task.items:
            digest.update(f"{task.name}\t{item.path}\t{item.class_index}\t{item.for_stats:d}\n".encode())
    return tasks, digest.hexdigest(), notes


def _stats_selection(count: int, config: PrepareConfig) -> np.ndarray:
    """Which training files the statistics are computed over: all, or a seeded sample."""
    if config.stats_sample is None or config.stats_sample >= count:
        return np.ones(count, bool)
    chosen = np.zeros(count, bool)
    rng = np.random.default_rng([config.seed, Stream.STATS_SAMPLE])
    chosen[rng.choice(count, config.stats_sample, replace=False)] = True
    return chosen


def _convert(
    config: PrepareConfig, source: Source, todo: list[ShardTask], done: resume.Checkpoint, output: str
) -> tuple[int, float | None]:
    """Writes the shards in ``todo`` on worker processes; returns the files read and the steady rate."""
    context = _shard_context(config, source, output, run_id=uuid.uuid4().hex[:8])
    total = sum(len(task.items) for task in todo)
    skipped = 0
    again = " without `overwrite=True`" if config.overwrite else ""  # it would delete them
    job = jobs.Job(
        lambda: done.save(output),
        seconds=CHECKPOINT_SECONDS,
        kept=f"the finished shards are kept; re-run the same command{again} to resume",
        parameters=("overwrite",),
    )
    with tqdm(
        total=total, unit="img", desc="prepare-data", disable=not config.progress, smoothing=0.05, dynamic_ncols=True
    ) as bar:
        throughput = _Throughput(bar)

        def on_result(result: ShardResult) -> None:
            nonlocal skipped
            job.finished(lambda: done.add(result))
            skipped += len(result.skipped)
            bar.set_postfix(skipped=skipped, refresh=False)

        with job:  # keeps the finished shards for the next run, however this one stops
            run_tasks(write_shard, context, todo, workers=_workers(config), on_result=on_result, on_progress=throughput)
    return total, throughput.steady_rate()


def _convert_on_beam(
    config: PrepareConfig, source: Source, todo: list[ShardTask], done: resume.Checkpoint, output: str
) -> tuple[int, None]:
    """Writes the shards in ``todo`` as one Apache Beam job and adds them to ``done``; returns the
    files read (no steady rate: the runner reports its own progress)."""
    beam_runner = runners.load_beam()
    try:
        written = beam_runner.run_tasks(
            write_shard,
            _shard_context(config, source, output, run_id=None),  # None: each attempt its own temporary
            todo,
            functools.partial(resume.Checkpoint, config.image_size),
            options=beam_runner.pipeline_options(config.beam_options),
            scratch=posixpath.join(output, resume.STATE_DIR),
            counter="images",
        )
    except KeyboardInterrupt as interrupted:  # the runner cancelled its job (on a cluster too)
        signum = interrupted.signum if isinstance(interrupted, preemption.Stopped) else signal.SIGINT
        raise preemption.Stopped(signum, note="the Beam job was stopped; re-run the same command to resume") from None
    done.merge(written)
    files.remove_temporaries(output)  # those of attempts the runner gave up on and retried
    return sum(len(task.items) for task in todo), None


def _shard_context(config: PrepareConfig, source: Source, output: str, run_id: str | None) -> ShardContext:
    return ShardContext(
        output=output,
        run_id=run_id,
        classes=tuple((c.wnid, c.name) for c in source.classes),
        label_offset=config.label_offset,
        image_options=config.image_options(),
    )


class _Throughput:
    """Advances the progress bar and measures the rate from the first converted file on."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar
        self._count = 0
        self._first: tuple[float, int] | None = None  # (time, count) at the first report
        self._last = 0.0

    def __call__(self, count: int) -> None:
        self._bar.update(count)
        self._count += count
        self._last = time.monotonic()
        if self._first is None:
            self._first = (self._last, self._count)

    def steady_rate(self) -> float | None:
        if self._first is None or self._last <= self._first[0]:
            return None
        return (self._count - self._first[1]) / (self._last - self._first[0])


def _workers(config: PrepareConfig) -> int:
    return default_workers() if config.workers is None else config.workers


def _metadata(
    source: Source, tasks: list[ShardTask], done: resume.Checkpoint, config: PrepareConfig, options: dict[str, Any]
) -> DatasetMetadata:
    splits = {}
    for split in SPLITS:
        names = [task.name for task in tasks if task.split == split]
        if not names:
            continue
        per_class = {c.wnid: 0 for c in source.classes}
        for name in names:
            for wnid, count in done.shards[name].per_class.items():
                per_class[wnid] += count
        shards = [ShardInfo(name=name, records=sum(done.shards[name].per_class.values())) for name in names]
        splits[split] = SplitInfo(num_records=sum(s.records for s in shards), per_class=per_class, shards=shards)
    skipped = source.skipped + [entry for shard in done.shards.values() for entry in shard.skipped]
    return DatasetMetadata(
        classes=source.classes,
        splits=splits,
        label_offset=config.label_offset,
        image_size=None if config.keep_geometry else config.image_size,
        stats=done.stats.to_dataset_stats() if done.stats.images else None,
        skipped=sorted(skipped, key=lambda entry: (entry.split, entry.path)),
        options=options,
    )


def _refuse_output_inside(output: str, source: Source) -> None:
    """The output must not be one of the dataset's class folders (its shards would be "images")."""
    resolved = _resolve(output)
    for folder in map(_resolve, source.folders):
        if resolved == folder or resolved.startswith(folder.rstrip("/") + "/"):
            raise InputError(f"{output}: the output directory is inside the dataset folder {folder}; choose another")


def _resolve(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.realpath(path)
