"""`index_records`: metadata for TFRecords other tools wrote (Model Garden, TF-Slim, TFDS), in place.

The importable function behind ``alexnet-tf index-records`` (long for the reason
`alexnet_tf.prepare.convert` is: the job's whole order in one place). Re-encoding 1.28 M ImageNet images
that a user already holds as TFRecords costs hours; this reads them once instead and writes what
`alexnet_tf.input.pipeline.InputPipeline` needs beside them (or in ``output``): ``metadata.json``
(schema, shards, classes, per-split and per-class counts, label offset, statistics) and
``mean_image.npy``. It never writes, renames or deletes a record or shard.

* Shards and class names: `alexnet_tf.prepare.layout` (the common namings, TFDS's label file);
  the schema from the first record of each split.
* One task per shard on worker processes (`alexnet_tf.prepare.scan.scan_shard`), with a progress
  bar in bytes (the total is known before any record is read); or, with ``runner="beam"``, as one
  Apache Beam job (`alexnet_tf.prepare.beam_runner`), whose results fill the same checkpoint.
* Statistics as prepare-data computes them: each training image's §2 256×256 crop, summed exactly
  (`PixelStats`); ``stats_sample`` takes the first records of every training shard instead.
* Label offset: inferred (`infer_label_offset`) unless given; the report says how sure.
* Records keep their geometry: ``image_size`` is 256 only if every image is 256×256, else None
  (the input pipeline then applies §2 on the fly).
* Resumable: the finished shards' results and their merged exact sums are checkpointed in
  ``OUTPUT/_index/checkpoint.npz`` (at most every `CHECKPOINT_SECONDS`, and on Ctrl-C, SIGTERM
  or an error: `alexnet_tf.jobs.Job`), with the options and a digest of the shard list; a rerun
  scans only the other shards and gives byte-identical metadata. Changed options or shards are
  refused unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import os
import posixpath
import time
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
from tqdm import tqdm

from alexnet_tf import errors, files, jobs, locks, paper
from alexnet_tf.constants import BEAM_RUNNER, LOCAL_RUNNER
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.files import output_errors
from alexnet_tf.jobs import CHECKPOINT_SECONDS
from alexnet_tf.prepare import layout, resume, runners
from alexnet_tf.prepare.scan import ScanContext, ScanResult, ScanTask, scan_shard
from alexnet_tf.prepare.stats import PixelStats
from alexnet_tf.prepare.workers import default_workers, run_tasks
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import (
    MEAN_IMAGE_FILENAME,
    METADATA_FILENAME,
    ClassInfo,
    DatasetMetadata,
    ShardInfo,
    SplitInfo,
    metadata_path,
    save_mean_image,
)

STATE_DIR = "_index"
CHECKPOINT_FILE = "checkpoint.npz"
TOOL = "index-records"


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Everything `index_records` needs; the CLI flags map one to one onto these fields.

    Attributes:
        records_dir: the directory holding the shards (local or ``gs://``); only read.
        output: where ``metadata.json`` and ``mean_image.npy`` go (None: ``records_dir``); the
            metadata then names ``records_dir``, so the input pipeline finds the shards.
        stats_sample: compute the statistics over about this many training records (the first
            records of every training shard) instead of all of them.
        label_offset: 0 (labels 0..N-1) or 1 (1..N, 0 = background); None infers it.
        workers: worker processes (default: the CPUs available to this process).
        overwrite: replace metadata already in ``output`` (ours or prepare-data's) and any
            interrupted index run's state; never touches the records.
        progress: show a progress bar on stderr.
        runner, beam_options: where the shards are read, as prepare-data's
            (`alexnet_tf.prepare.convert.PrepareConfig`).
    """

    records_dir: str
    output: str | None = None
    stats_sample: int | None = None
    label_offset: int | None = None
    workers: int | None = None
    overwrite: bool = False
    progress: bool = True
    runner: str = LOCAL_RUNNER
    beam_options: str | None = None

    def __post_init__(self) -> None:
        runners.check(self.runner, self.beam_options, self.workers)
        checks = [
            (self.stats_sample is None or self.stats_sample >= 1, "stats_sample", "at least 1"),
            (self.label_offset in (None, 0, 1), "label_offset", "None (auto), 0 or 1"),
            (self.workers is None or self.workers >= 1, "workers", "at least 1"),
        ]
        for ok, name, requirement in checks:
            if not ok:
                raise invalid(name, getattr(self, name), requirement)

    def options(self) -> dict[str, Any]:
        """The options that determine the metadata: compared on resume, stored in the metadata."""
        return {
            "tool": TOOL,
            "records_dir": _absolute(self.records_dir),
            "stats_sample": self.stats_sample,
            "label_offset": "auto" if self.label_offset is None else self.label_offset,
        }


@dataclasses.dataclass
class IndexReport:
    """What `index_records` did: the metadata written, what it inferred, and this run's work."""

    metadata: DatasetMetadata
    output: str
    scanned_shards: int  # shards read in this run
    resumed_shards: int  # shards an earlier, interrupted run had read
    seconds: float
    notes: list[str]  # what was inferred and how sure, and what could not be
    up_to_date: bool = False

    def summary(self) -> str:
        """The one-line summary the CLI prints at the end."""
        counts = " and ".join(
            f"{split.num_records:,} {name} records in {len(split.shards)} shards"
            for name, split in self.metadata.splits.items()
        )
        where = metadata_path(self.output)
        if self.up_to_date:
            return errors.worded(
                f"{where} is already up to date: {counts}; nothing to do (`overwrite=True` rebuilds it)", ("overwrite",)
            )
        kept = f"; {self.resumed_shards} shards kept from the interrupted run" if self.resumed_shards else ""
        duration = datetime.timedelta(seconds=round(self.seconds))
        return (
            f"Indexed {counts} ({self.metadata.schema} schema, {self.metadata.num_classes} classes, label offset "
            f"{self.metadata.label_offset}) into {where}; this run read {self.scanned_shards} shards in "
            f"{duration}{kept}"
        )


def index_records(config: IndexConfig) -> IndexReport:
    """Writes metadata for the records in ``config.records_dir`` (see the module docstring).

    Raises `InputError` for bad input (no shards, an unknown schema, a bad record, metadata
    already there), `alexnet_tf.prepare.workers.WorkerError` if a worker dies, and
    `alexnet_tf.preemption.Stopped` on Ctrl-C or SIGTERM, after checkpointing the shards already read.
    """
    started = time.monotonic()
    if config.runner == BEAM_RUNNER:  # before anything is read or written: Beam installed, its options valid
        runners.load_beam().pipeline_options(config.beam_options)
    records_dir = config.records_dir.rstrip("/") or "/"
    output = (config.output or records_dir).rstrip("/") or "/"
    shards, notes = layout.find_shards(records_dir)
    record_schema = _schema(records_dir, shards)
    class_names = layout.read_class_names(records_dir)
    options = config.options() | {"shards_digest": _digest(shards)}
    hint = "; give `output=DIR` for the metadata" if output == records_dir else ""
    with _output_lock(output, hint):
        if config.overwrite:
            _remove_outputs(output)
        done = _Checkpoint.load(output)
        if done is None:
            complete = _complete_metadata(output, options)
            if complete is not None:
                count = sum(len(s) for s in shards.values())
                return IndexReport(complete, output, 0, count, time.monotonic() - started, [], up_to_date=True)
            done = _Checkpoint(options)
            try:  # now, so that a read-only output fails before the scan, not after it
                done.save(output)
            except InputError as error:
                raise InputError(f"{error}{hint}", (*error.parameters, "output")) from None
        else:
            jobs.check_options(
                done.options,
                options,
                f"{output} was being indexed with other options or shards",
                "use the original options to resume, or pass `overwrite=True` to start again",
                ("overwrite",),
            )

        for name in (METADATA_FILENAME, MEAN_IMAGE_FILENAME):  # ours only: the directory may be the user's
            files.remove_temporaries(output, name)
        tasks = _tasks(shards, config.stats_sample)
        todo = [task for task in tasks if task.name not in done.results]
        context = ScanContext(records_dir, record_schema)
        _scan(config, context, todo, shards, done, output)

        metadata, inferred = _metadata(shards, done, record_schema, class_names, config, options, output)
        with output_errors(output):
            if done.stats.images:
                save_mean_image(output, done.stats.mean_image())
            metadata.save(output)
            tf.io.gfile.rmtree(posixpath.join(output, STATE_DIR))
        return IndexReport(
            metadata,
            output,
            scanned_shards=len(todo),
            resumed_shards=len(tasks) - len(todo),
            seconds=time.monotonic() - started,
            notes=notes + inferred,
        )


@contextlib.contextmanager
def _output_lock(output: str, hint: str) -> Iterator[None]:
    """Holds the output's lock (`alexnet_tf.locks`: one run per output) from before anything in it
    is read or deleted; ``hint`` is added to a failure to write it (e.g. a read-only directory)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locks.lock_directory(output, TOOL))
        except locks.DirectoryInUse:
            raise
        except InputError as error:
            raise InputError(f"{error}{hint}", (*error.parameters, "output")) from None
        yield


def infer_label_offset(
    requested: int | None, labels: set[int], record_schema: str, class_names: layout.ClassNames
) -> tuple[int, str]:
    """The label offset and a sentence saying how it was found and how sure that is.

    Label 0 present: 0-based, certain. Otherwise, with a known class count N: labels reaching N
    mean 1..N (certain); else 0 (TFDS's ``ClassLabel`` is 0-based). Without one: Model Garden /
    TF-Slim records whose smallest label is 1 are taken as 1..N with 0 for background (likely,
    not certain: a 0-based set lacking its first class looks the same); TFDS records as 0-based.
    """
    low, high = min(labels), max(labels)
    seen = f"labels {low}..{high}"
    if requested is not None:
        if low - requested < 0:
            raise InputError(
                f"`label_offset={requested}`: the records hold label {low}, which would be class {low - requested}; "
                "use `label_offset=0` or let it be inferred",
                ("label_offset",),
            )
        return requested, f"label offset {requested} as given ({seen})"
    if low == 0:
        return 0, f"label offset 0 inferred: {seen} include 0 (certain)"
    known = class_names.num_classes
    if known is not None:
        if high == known:
            return 1, f"label offset 1 inferred: {seen} with {known} classes in {class_names.source} (certain)"
        return 0, errors.worded(
            f"label offset 0 assumed: {seen} fit the {known} classes of {class_names.source} either way and "
            "TFDS labels are 0-based; pass `label_offset=1` if label 1 is the first class",
            ("label_offset",),
        )
    if record_schema == schema.MODEL_GARDEN:
        return 1, errors.worded(
            f"label offset 1 inferred: {seen}, label 0 never occurs, as in Model Garden / TF-Slim's 1..N with 0 "
            "for background (likely, not certain: pass `label_offset=0` if label 0 is a class without records)",
            ("label_offset",),
        )
    return 0, f"label offset 0 assumed: {seen}, label 0 never occurs, and TFDS labels are 0-based"


class _Checkpoint:
    """The finished shards' results and the merged exact statistic sums, with the run's options."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.results: dict[str, ScanResult] = {}
        self.stats = PixelStats(paper.IMAGE_SIZE)

    def add(self, result: ScanResult) -> None:
        self.results[result.name] = result
        if result.stats is not None:
            self.stats.merge(result.stats)

    def merge(self, other: _Checkpoint) -> None:
        """Adds the shards of another checkpoint (a Beam job's partial result)."""
        self.results.update(other.results)
        self.stats.merge(other.stats)

    def save(self, output: str) -> None:
        state = {"options": self.options, "results": [r.to_dict() for r in self.results.values()]}
        with output_errors(output):
            tf.io.gfile.makedirs(posixpath.join(output, STATE_DIR))
        resume.save_state(_checkpoint_path(output), state, self.stats)

    @classmethod
    def load(cls, output: str) -> _Checkpoint | None:
        path = _checkpoint_path(output)
        if not tf.io.gfile.exists(path):
            return None
        state, stats = resume.load_state(path)
        done = cls(state["options"])
        done.stats = stats
        done.results = {raw["name"]: ScanResult.from_dict(raw) for raw in state["results"]}
        return done


def _checkpoint_path(output: str) -> str:
    return posixpath.join(output, STATE_DIR, CHECKPOINT_FILE)


def _absolute(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def _digest(shards: dict[str, list[layout.ShardFile]]) -> str:
    """Identifies the shard set (names and sizes): a rerun on changed records must not reuse results."""
    digest = hashlib.sha256()
    for split in sorted(shards):
        for shard in shards[split]:
            digest.update(f"{split}\t{shard.name}\t{shard.size}\n".encode())
    return digest.hexdigest()


def _schema(records_dir: str, shards: dict[str, list[layout.ShardFile]]) -> str:
    """The schema of the first record of each split; `InputError` if the splits differ."""
    found = {split: layout.read_schema(posixpath.join(records_dir, files_[0].name)) for split, files_ in shards.items()}
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{split}: {name}" for split, name in found.items())
        raise InputError(f"{records_dir}: the splits use different record schemas ({listed}); index them separately")
    return next(iter(found.values()))


def _remove_outputs(output: str) -> None:
    """What ``overwrite`` deletes: metadata, mean image and index state in ``output``, nothing else."""
    with output_errors(output):
        for name in (METADATA_FILENAME, MEAN_IMAGE_FILENAME):
            path = posixpath.join(output, name)
            if tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
        if tf.io.gfile.isdir(posixpath.join(output, STATE_DIR)):
            tf.io.gfile.rmtree(posixpath.join(output, STATE_DIR))


def _complete_metadata(output: str, options: dict[str, Any]) -> DatasetMetadata | None:
    """The metadata of a finished index run with these options; `InputError` for any other metadata."""
    if not tf.io.gfile.exists(metadata_path(output)):
        return None
    metadata = DatasetMetadata.load(output)
    if metadata.options != options:
        by = (
            "an index-records run with other options or other shards"
            if metadata.options.get("tool") == TOOL
            else ("prepare-data or by hand")
        )
        raise InputError(
            f"{metadata_path(output)} already exists (written by {by}); pass `overwrite=True` to replace it "
            "(the records are not touched), or write elsewhere with `output=DIR`",
            ("overwrite", "output"),
        )
    return metadata


def _tasks(shards: dict[str, list[layout.ShardFile]], stats_sample: int | None) -> list[ScanTask]:
    """One task per shard; the statistics' sample is spread evenly over the training shards."""
    tasks = []
    for split, found in shards.items():
        for i, shard in enumerate(found):
            if split != schema.TRAIN:
                wanted: int | None = 0
            elif stats_sample is None:
                wanted = None
            else:
                wanted = stats_sample // len(found) + (i < stats_sample % len(found))
            tasks.append(ScanTask(shard.name, split, wanted))
    return tasks


def _scan(
    config: IndexConfig,
    context: ScanContext,
    todo: list[ScanTask],
    shards: dict[str, list[layout.ShardFile]],
    done: _Checkpoint,
    output: str,
) -> None:
    if config.runner == BEAM_RUNNER:
        beam_runner = runners.load_beam()
        scanned = beam_runner.run_tasks(
            scan_shard,
            context,
            todo,
            functools.partial(_Checkpoint, done.options),
            options=beam_runner.pipeline_options(config.beam_options),
            scratch=posixpath.join(output, STATE_DIR),
            counter="bytes",
        )
        done.merge(scanned)
        return
    sizes = {shard.name: shard.size for found in shards.values() for shard in found}
    job = jobs.Job(
        lambda: done.save(output),
        seconds=CHECKPOINT_SECONDS,
        kept="the shards already read are kept; re-run the same command to resume",
    )
    with tqdm(
        total=sum(sizes[task.name] for task in todo),
        unit="B",
        unit_scale=True,
        desc=TOOL,
        disable=not config.progress,
        dynamic_ncols=True,
    ) as bar:

        def on_result(result: ScanResult) -> None:
            job.finished(lambda: done.add(result))

        workers = default_workers() if config.workers is None else config.workers
        with job:  # keeps the shards already read for the next run, however this one stops
            run_tasks(scan_shard, context, todo, workers=workers, on_result=on_result, on_progress=bar.update)


def _metadata(
    shards: dict[str, list[layout.ShardFile]],
    done: _Checkpoint,
    record_schema: str,
    class_names: layout.ClassNames,
    config: IndexConfig,
    options: dict[str, Any],
    output: str,
) -> tuple[DatasetMetadata, list[str]]:
    """The metadata from the shards' results, and notes on what was inferred or missing."""
    results = [done.results[shard.name] for found in shards.values() for shard in found]
    labels = {label for result in results for label in result.labels}
    if not labels:
        raise InputError(f"{config.records_dir}: the shards hold no records")
    offset, how = infer_label_offset(config.label_offset, labels, record_schema, class_names)
    synsets = _merge_synsets(results)
    classes, named = _classes(labels, offset, synsets, class_names, config.records_dir)
    splits = {}
    for split, found in shards.items():
        per_class = {c.wnid: 0 for c in classes}
        for shard in found:
            for label, count in done.results[shard.name].labels.items():
                per_class[classes[label - offset].wnid] += count
        infos = [ShardInfo(shard.name, done.results[shard.name].records) for shard in found]
        splits[split] = SplitInfo(sum(s.records for s in infos), per_class, infos)
    empty = [c.wnid for c in classes if not any(s.per_class[c.wnid] for s in splits.values())]
    notes = [f"{record_schema} schema", how, named]
    if empty:
        notes.append(f"{len(empty)} of {len(classes)} classes have no records (e.g. {', '.join(empty[:3])})")
    all_square = all(result.all_square for result in results)
    notes.append(
        f"all images are {paper.IMAGE_SIZE}x{paper.IMAGE_SIZE}: image_size {paper.IMAGE_SIZE}"
        if all_square
        else "images of other sizes: they keep their geometry and the input pipeline applies §2 (resize, crop)"
    )
    if done.stats.images:
        sampled = "" if config.stats_sample is None else " (the first records of every training shard)"
        notes.append(f"statistics over {done.stats.images:,} training images{sampled}")
    else:
        notes.append("no training split: no statistics and no mean image (use mean='none' and lighting_strength=0)")
    metadata = DatasetMetadata(
        classes=classes,
        splits=splits,
        label_offset=offset,
        image_size=paper.IMAGE_SIZE if all_square else None,
        stats=done.stats.to_dataset_stats() if done.stats.images else None,
        options=options,
        schema=record_schema,
        records_dir=None if _absolute(output) == _absolute(config.records_dir) else _absolute(config.records_dir),
    )
    return metadata, notes


def _merge_synsets(results: list[ScanResult]) -> dict[int, tuple[str, str]]:
    synsets: dict[int, tuple[str, str]] = {}
    for result in results:
        for label, named in result.synsets.items():
            if synsets.setdefault(label, named) != named:
                raise InputError(
                    f"shard {result.name}: label {label} is {named[0]!r} there but {synsets[label][0]!r} in another "
                    "shard; the records disagree on what the label means"
                )
    return synsets


def _classes(
    labels: set[int],
    offset: int,
    synsets: dict[int, tuple[str, str]],
    class_names: layout.ClassNames,
    records_dir: str,
) -> tuple[list[ClassInfo], str]:
    """Classes 0..N-1 (N: the class file's count, else the largest label), and where names came from."""
    count = max(labels) - offset + 1
    if class_names.num_classes is not None:
        if count > class_names.num_classes:
            raise InputError(
                f"{records_dir}: label {max(labels)} with label offset {offset} is class {count - 1}, but "
                f"{class_names.source} has {class_names.num_classes} classes; check `label_offset`",
                ("label_offset",),
            )
        count = class_names.num_classes
    classes = []
    for index in range(count):
        synset, text = synsets.get(index + offset, ("", ""))
        fallback = class_names.names[index] if class_names.names else f"class_{index:04d}"
        wnid = synset or fallback
        classes.append(ClassInfo(index, wnid, text or wnid))
    wnids = [c.wnid for c in classes]
    if len(set(wnids)) != len(wnids):
        duplicate = next(w for w in wnids if wnids.count(w) > 1)
        raise InputError(f"{records_dir}: two labels share the class {duplicate!r}; check the records' synsets")
    if synsets and all(text for _, text in synsets.values()):
        named = f"class wnids and names from {schema.SYNSET} and {schema.TEXT}"
    elif synsets:
        named = f"wnids from {schema.SYNSET}; no class names found: wnids used as names"
    elif class_names.names:
        named = f"class names from {class_names.source} (used as wnids too)"
    else:
        named = "no class names or wnids found: classes named class_0000, class_0001, …"
    return classes, named
