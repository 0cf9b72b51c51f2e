"""Resumable jobs: what prepare-data, index-records, tune and fit each need to be run again safely.

A job writes into a directory it owns and can be stopped at any moment (Ctrl-C, SIGTERM, kill -9,
an error); running it again with the same options continues where it stopped. Every such job
needs the same three things, which live here; what each records and checkpoints stays its own
(prepare-data: ``_prepare/``; index-records: ``_index/``; tune: ``settings.yaml`` and
keras-tuner's oracle; fit: ``recipe.yaml`` and ``checkpoints/``).

1. **Record the options, refuse a changed re-run.** The options are recorded before any work; a
   re-run with other ones would mix two jobs' outputs, so it is refused, naming the file and each
   option that differs with both values, unless the caller allows the change (`check_options`).
2. **Checkpoint now and then.** `Job.finished` records each finished unit of work (a shard, a
   trial, a training step) and saves a checkpoint when `seconds` have passed or `steps` units
   were finished since the last one: work redone after kill -9 is bounded by that.
3. **Save on interrupt.** Leaving a `Job` by any exception (Ctrl-C, SIGTERM, a dead worker, bad
   input) saves once more, so nothing finished is redone. With ``kept`` (what an interrupted run
   keeps and how to resume it), Ctrl-C and SIGTERM stop the job with a `preemption.Stopped`
   carrying that note; the command line prints it in one line and exits 130 or 143. A signal
   that arrives while `Job.finished` records a unit stops the job right after it, so a checkpoint
   never holds half of a unit (a shard's counts without its statistics). Signals are handled only
   in the main thread (Python's rule); elsewhere Ctrl-C stays a plain `KeyboardInterrupt`.

Using it (prepare-data, index-records, tune and fit's loop do)::

    check_options(recorded, options, f"{out} was prepared with other options",
                  "use them to resume, or pass `overwrite=True` to start again", ("overwrite",))
    with Job(lambda: state.save(out), seconds=30, kept="the finished shards are kept") as job:
        for result in results:
            job.finished(lambda: state.add(result))

fit's loop (`alexnet_tf.training.loop`): ``save`` writes the checkpoint of the current global
step, ``steps`` is ``training.checkpoint_every_steps`` (``finished()`` after each step, `Job.save`
at each validated epoch's end, which restarts the count). fit stops on signals at step boundaries
itself, agreed by all workers (`alexnet_tf.preemption.StopSignals`), and must not save a checkpoint after
an error such as a NaN loss: it passes ``kept=None`` and ``save_on=(preemption.Stopped,)``.
This module imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from types import FrameType, TracebackType
from typing import Any

from alexnet_tf import preemption
from alexnet_tf.errors import InputError

# Data jobs (prepare-data, index-records): work redone after kill -9 is at most this many
# seconds plus the units in flight; a checkpoint of ImageNet's state takes well under a second.
CHECKPOINT_SECONDS = 30.0


def changed_options(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The names of the options whose values differ between ``recorded`` and ``current``, sorted.

    A missing option counts as None; a mapping's values (a recipe's sections) are compared one by
    one and named ``key.inner``, a missing mapping counting as an empty one.
    """
    return [name for name, _, _ in _changes(recorded, current)]


def check_options(
    recorded: Mapping[str, Any],
    current: Mapping[str, Any],
    refusal: str,
    advice: str,
    parameters: Iterable[str] = (),
    allow_change: bool = False,
) -> list[str]:
    """Compares a job's ``current`` options with those it ``recorded`` when it started.

    Returns the options that differ (`changed_options`; none: the same job). Unless
    ``allow_change``, a difference is refused: `InputError` ``"<refusal> (<name>: <recorded> ->
    <current>; …); <advice>"``, whose ``advice`` names ``parameters`` as `alexnet_tf.errors` says.
    """
    changes = _changes(recorded, current)
    if changes and not allow_change:
        details = "; ".join(f"{name}: {before!r} -> {after!r}" for name, before, after in changes)
        raise InputError(f"{refusal} ({details}); {advice}", parameters)
    return [name for name, _, _ in changes]


class Job:
    """A running job's checkpoints and stop signals (module docstring, items 2 and 3).

    Args:
      save: writes a checkpoint of the work finished so far (an `InputError` if it cannot; the
        final save on the way out of an exception ignores that error: the exception is what to
        report). None: the job keeps its state itself.
      seconds, steps: `finished` saves when this many seconds passed, or this many units were
        finished, since the last save (None: not by that measure).
      kept: what an interrupted run keeps and how to resume it, worded for the reader of
        `alexnet_tf.errors` (``"the finished shards are kept; re-run the same command to
        resume"``); Ctrl-C and SIGTERM then stop the job with `preemption.Stopped` carrying it.
        None: the job handles signals itself.
      parameters: the parameters ``kept`` names.
      save_on: the exceptions on whose way out the job saves once more (default: any).
    """

    def __init__(
        self,
        save: Callable[[], None] | None = None,
        seconds: float | None = None,
        steps: int | None = None,
        kept: str | None = None,
        parameters: Iterable[str] = (),
        save_on: tuple[type[BaseException], ...] = (BaseException,),
    ) -> None:
        self._save = save
        self._seconds = seconds
        self._steps = steps
        self._kept = kept
        self._parameters = tuple(parameters)
        self._save_on = save_on
        self._last = time.monotonic()
        self._since = 0  # units finished since the last save
        self._recording = False  # inside `finished`: a signal waits until it returns
        self._pending: int | None = None  # that signal
        self._previous: dict[int, Any] | None = None

    def __enter__(self) -> Job:
        self._last = time.monotonic()
        if self._kept is not None:
            self._previous = preemption.installed(self._signal)
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        # Default handlers first: a second Ctrl-C during the last save stops at once (the
        # previous checkpoint stays).
        preemption.restore(self._previous)
        self._previous = None
        if error is None:
            return
        if self._save is not None and isinstance(error, self._save_on):
            with contextlib.suppress(InputError):
                self._save()
        interrupted = isinstance(error, KeyboardInterrupt) and not isinstance(error, preemption.Stopped)
        if self._kept is not None and interrupted:
            # Not through our handler (raised by code, or a job outside the main thread): the same
            # stop, with its note.
            raise self._stopped(signal.SIGINT) from None

    def finished(self, record: Callable[[], None] | None = None) -> bool:
        """Records one finished unit of work (``record`` adds it to the state `save` writes), then
        saves if it is due (the class docstring); True if it saved. A Ctrl-C or SIGTERM that arrives
        meanwhile stops the job once both are done."""
        self._recording = True
        try:
            if record is not None:
                record()
            self._since += 1
            due = (self._seconds is not None and time.monotonic() - self._last >= self._seconds) or (
                self._steps is not None and self._since >= self._steps
            )
            if due:
                self.save()
        finally:
            self._recording = False
        if self._pending is not None:
            raise self._stopped(self._pending)
        return due

    def save(self) -> None:
        """Saves a checkpoint now and restarts the count towards the next."""
        if self._save is not None:
            self._save()
        self._last = time.monotonic()
        self._since = 0

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        if self._recording:
            self._pending = self._pending or signum
            return
        raise self._stopped(signum)

    def _stopped(self, signum: int) -> preemption.Stopped:
        return preemption.Stopped(signum, note=self._kept, parameters=self._parameters)


def _changes(recorded: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(name, recorded value, current value) of each option that differs (`changed_options`)."""
    changes = []
    for key in sorted(set(recorded) | set(current)):
        before, after = recorded.get(key), current.get(key)
        if isinstance(before, Mapping) or isinstance(after, Mapping):
            changes.extend(_changes(_mapping(before), _mapping(after), f"{prefix}{key}."))
        elif before != after:
            changes.append((f"{prefix}{key}", before, after))
    return changes


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
