"""Shard tasks as one Apache Beam job: prepare-data's and index-records' ``--runner beam``.

The Beam counterpart of `alexnet_tf.prepare.workers.run_tasks`. The caller plans the shards as
for the local pool; the job runs the same task function (`alexnet_tf.prepare.shards.write_shard`,
`alexnet_tf.prepare.scan.scan_shard`) once per shard on the runner the options name, and a
`beam.CombineFn` adds the results into the accumulator the local pool fills
(`alexnet_tf.prepare.resume.Checkpoint`: per-shard counts, skipped files, and the exact integer
sums of `PixelStats`, whose merge is exact in any order). So a job writes the same shards, byte for
byte, and the same metadata and statistics as the local pool. Imported only through
`alexnet_tf.prepare.runners.load_beam` (Apache Beam is the optional ``[beam]`` extra)::

    Create(task byte ranges) | Reshuffle | Map(task function) | CombineGlobally(accumulator) | Map(save)

- The tasks (for prepare-data every file path: ~100 MB for ImageNet) reach the workers through a
  file in the job's scratch directory, not inside the pipeline, which Dataflow limits to 10 MB;
  the pipeline holds each task's byte range in that file. Reshuffle spreads the tasks over the
  workers (a runner may otherwise fuse them into one worker's read of the list).
- A Beam pipeline returns nothing to the process that launched it, so the last step saves the
  combined accumulator to the scratch directory and `run_tasks` reads it from there. Both files
  are pickles that this job writes for itself, as Beam ships its own pipeline to its workers.
- All these files and the shards go through `tf.io.gfile` (``gs://`` works on the launching
  machine and on the workers); the runner's own files (staging, temp_location) are its business.
- Failures: a runner retries a failed bundle. A retried shard is written again under a temporary
  name of its own (`alexnet_tf.prepare.shards.ShardContext` with ``run_id=None``) and renamed
  when whole, with the same bytes; the results of a failed attempt never reach the combine (a
  runner commits a bundle's output once). A job that fails or is killed leaves no result; the
  caller writes no metadata, and running it again redoes every shard of the job.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import pickle
import posixpath
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners import create_runner
from apache_beam.runners.runner import PipelineState

from alexnet_tf import files
from alexnet_tf.errors import InputError
from alexnet_tf.files import output_errors
from alexnet_tf.prepare.workers import WorkerError

# The Beam counter that task functions' progress reports add to (the runner's UI shows it).
COUNTER_NAMESPACE = "alexnet-tf"
_AGAIN = "re-run the same command to run it again"


def pipeline_options(text: str | None) -> PipelineOptions:
    """``"key=value,key=value"`` as Beam's options, as ``tfds build --beam_pipeline_options``
    takes them (each item is one Beam flag without its ``--``; a bare name is a boolean flag).

    Raises `InputError` naming the option for an unknown name, a bad value or an unknown runner,
    instead of Beam's warning (it ignores unknown names) or argparse's usage text and exit.
    """
    flags = [f"--{item.strip().lstrip('-')}" for item in (text or "").split(",") if item.strip()]
    parsed = PipelineOptions(flags=flags)
    refusal = io.StringIO()
    try:
        with contextlib.redirect_stderr(refusal), _quiet(PipelineOptions.__module__):
            known = parsed.get_all_options()  # every option Beam knows, with its default
            given = parsed.get_all_options(drop_default=True, retain_unknown_options=True)
    except SystemExit:  # argparse refused a value, e.g. direct_num_workers=two
        reason = refusal.getvalue().strip().splitlines()[-1].partition("error: ")[2]
        raise InputError(f"`beam_options={text!r}`: {reason}", ("beam_options",)) from None
    unknown = sorted(set(given) - set(known))
    if unknown:
        hints = [_with_hint(name, known) for name in unknown]
        raise InputError(f"`beam_options={text!r}`: no Beam option named {', '.join(hints)}", ("beam_options",))
    runner = parsed.view_as(StandardOptions).runner
    if runner is not None:
        try:
            create_runner(runner)
        except (ValueError, ImportError) as error:
            raise InputError(
                f"`beam_options='runner={runner}'`: {' '.join(str(error).split())}", ("beam_options",)
            ) from None
    return parsed


def _with_hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"{name} (did you mean {close[0]}?)" if close else name


def run_tasks(
    fn: Callable[[Any, Any, Callable[[int], None]], Any],
    shared: Any,
    tasks: Sequence[Any],
    make_accumulator: Callable[[], Any],
    *,
    options: PipelineOptions,
    scratch: str,
    counter: str,
) -> Any:
    """Runs ``fn(shared, task, progress)`` for every task as one Beam job and returns
    ``make_accumulator()`` with every result added (``add(result)``; partial accumulators are
    joined with ``merge(other)``). Progress goes to the Beam counter ``counter``.

    ``scratch`` (a directory that exists) holds the job's task list and result while it runs.
    Raises `WorkerError` if the job fails (the runner's log says why) and lets KeyboardInterrupt
    through after asking the runner to cancel the job.
    """
    if not tasks:
        return make_accumulator()
    job = uuid.uuid4().hex[:12]
    tasks_path = posixpath.join(scratch, f"beam-{job}-tasks.pkl")
    result_path = posixpath.join(scratch, f"beam-{job}-result.pkl")
    try:
        spans = _write_tasks(tasks_path, tasks)
        pipeline = beam.Pipeline(options=options)
        _ = (
            pipeline
            | "Tasks" >> beam.Create(spans)
            | "Spread" >> beam.Reshuffle()
            | "Run" >> beam.Map(_run_task, tasks_path, fn, shared, counter)
            | "Combine" >> beam.CombineGlobally(_Accumulate(make_accumulator))
            | "Save" >> beam.Map(_save, result_path)
        )
        _run(pipeline)
        with output_errors(result_path), tf.io.gfile.GFile(result_path, "rb") as f:
            return pickle.loads(f.read())
    finally:
        for path in (tasks_path, result_path):
            with contextlib.suppress(tf.errors.OpError):
                if tf.io.gfile.exists(path):
                    tf.io.gfile.remove(path)


def _run(pipeline: beam.Pipeline) -> None:
    """Runs the pipeline to its end; a failure is one `WorkerError` line (Beam logged the rest)."""
    result = None
    try:
        result = pipeline.run()
        state = result.wait_until_finish()
    except KeyboardInterrupt:
        if result is not None:
            with contextlib.suppress(Exception):
                result.cancel()  # a Dataflow job would otherwise go on without its launcher
        raise
    except Exception as error:  # noqa: BLE001 - any runner's failure; its log has the details
        raise WorkerError(f"the Beam job failed: {_last_line(error)}; {_AGAIN}") from None
    if state not in (PipelineState.DONE, None):
        raise WorkerError(f"the Beam job ended {state}; {_AGAIN}")


def _last_line(error: Exception) -> str:
    """The last non-empty line of a runner's error: the task's own exception, at the end of the
    remote traceback the runner wraps it in."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _write_tasks(path: str, tasks: Sequence[Any]) -> list[tuple[int, int]]:
    """Writes the pickled tasks one after another to ``path``; returns each one's (offset, size)."""
    spans, offset = [], 0
    with output_errors(path), files.atomic_path(path) as temp:
        with tf.io.gfile.GFile(temp, "wb") as f:
            for task in tasks:
                data = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
                f.write(data)
                spans.append((offset, len(data)))
                offset += len(data)
    return spans


def _run_task(span: tuple[int, int], tasks_path: str, fn: Callable[..., Any], shared: Any, counter: str) -> Any:
    """One task, read from its byte range of the task file (on a worker)."""
    offset, size = span
    with tf.io.gfile.GFile(tasks_path, "rb") as f:
        f.seek(offset)
        task = pickle.loads(f.read(size))
    progress = Metrics.counter(COUNTER_NAMESPACE, counter)
    return fn(shared, task, progress.inc)


def _save(accumulator: Any, path: str) -> None:
    files.write_atomically(path, pickle.dumps(accumulator, protocol=pickle.HIGHEST_PROTOCOL))


class _Accumulate(beam.CombineFn):
    """Adds task results into one accumulator of the caller's type (`run_tasks`)."""

    def __init__(self, make_accumulator: Callable[[], Any]) -> None:
        super().__init__()
        self._make = make_accumulator

    def create_accumulator(self) -> Any:
        return self._make()

    def add_input(self, accumulator: Any, result: Any) -> Any:
        accumulator.add(result)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Any]) -> Any:
        merged, *others = accumulators  # Beam lets the first one be modified and returned
        for other in others:
            merged.merge(other)
        return merged

    def extract_output(self, accumulator: Any) -> Any:
        return accumulator


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Mutes a logger for the block (Beam warns about the unknown options we then refuse)."""
    log = logging.getLogger(logger)
    previous, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = previous
