"""Which checkpoint of a run to resume from, found from the checkpoint files themselves.

`tf.train.CheckpointManager` keeps its list of checkpoints in a small state file,
``checkpoints/checkpoint``, and TensorFlow's own lookup (`tf.train.latest_checkpoint`) trusts
it: when it is garbled the run silently restarts from step 0 and writes over the intact
``ckpt-<step>`` files, when it is empty the lookup raises. And a checkpoint whose ``.index`` or
``.data-*`` file was cut short (a kill or a full disk while it was written: the index is written
in place, not renamed) fails deep inside the restore. `find_checkpoint` therefore trusts the
files: the newest ``ckpt-<step>`` every tensor of which reads back (each one's checksum is
checked on reading) is the one to resume from.

With ``repair`` (the chief of a run, the only process that writes to the run directory) it also
sets the directory right before the manager opens it, and says what it did in one line each:

* a newer checkpoint that does not read back is moved aside to ``bad-ckpt-<step>.*``, a name
  that neither TensorFlow nor this module reads again (kept for inspection, never deleted);
* the state file is rewritten when it is missing, unreadable, or names another checkpoint, so
  that the manager resumes its bookkeeping (and deletes the oldest checkpoints as usual);
* ``ckpt-<step>_temp/`` directories, left by a save that was interrupted, are removed.

If checkpoint files exist but none reads back, nothing is moved and `InputError` says so: the
run is never started again from step 0 on top of them. All I/O goes through `tf.io.gfile`
(``gs://`` works; there a move is a copy and a delete). A read that fails for a reason other
than the files' content (permissions, an unreachable bucket) is an `InputError`, and nothing is
moved.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import time

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState  # the state file's (no public name)

from alexnet_tf import files
from alexnet_tf.errors import InputError

STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's list of checkpoints
PREFIX = "ckpt"  # tf.train.CheckpointManager's default checkpoint_name
BAD_PREFIX = "bad-"
_NUMBERED = re.compile(rf"^{PREFIX}-(\d+)\.(index|data-\d{{5}}-of-\d{{5}})$")
# Failures to read that say nothing about the files' content: never a reason to move one aside.
_ACCESS_ERRORS = (
    tf.errors.PermissionDeniedError,
    tf.errors.UnauthenticatedError,
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.ResourceExhaustedError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


@dataclasses.dataclass(frozen=True)
class Found:
    """What `find_checkpoint` found: the checkpoint to restore (a path prefix, None for a fresh
    run) and one line for each thing it did or noticed on the way."""

    path: str | None
    notes: tuple[str, ...] = ()


def find_checkpoint(directory: str, repair: bool) -> Found:
    """The newest intact checkpoint in ``directory`` (see the module docstring).

    Args:
      directory: a run's ``checkpoints`` directory (may not exist yet).
      repair: move damaged checkpoints aside, rewrite the state file, remove leftovers (only
        the process that owns the run directory may).

    Raises:
      InputError: checkpoint files exist but none reads back, or they cannot be read at all.
    """
    if not tf.io.gfile.isdir(directory):
        return Found(None)
    if repair:
        with files.output_errors(directory):
            for leftover in tf.io.gfile.glob(posixpath.join(directory, f"{PREFIX}-*_temp")):
                tf.io.gfile.rmtree(leftover)
    steps = _steps_on_disk(directory)
    state_path = posixpath.join(directory, STATE_FILE)
    listed, problem = _read_state(state_path)
    if not steps:
        if repair and tf.io.gfile.exists(state_path):  # names nothing that exists: the manager would trip on it
            with files.output_errors(state_path):
                tf.io.gfile.remove(state_path)
        return Found(None)
    damaged: list[tuple[int, str]] = []
    chosen = None
    for step in steps:
        reason = damage(_prefix(directory, step))
        if reason is None:
            chosen = step
            break
        damaged.append((step, reason))
    if chosen is None:
        newest, reason = damaged[0]
        raise InputError(
            f"{directory}: no checkpoint can be restored ({len(steps)} found; the newest, {PREFIX}-{newest}: "
            f"{reason}); there is nothing to resume from: move the directory aside to train again from step 0"
        )
    path = _prefix(directory, chosen)
    if not repair:
        return Found(path)
    notes = []
    for step, reason in damaged:
        _move_aside(directory, step)
        notes.append(
            f"{_prefix(directory, step)}: damaged ({reason}); moved aside to {BAD_PREFIX}{PREFIX}-{step}.*, "
            f"resuming from {PREFIX}-{chosen}"
        )
    if problem is not None or listed != posixpath.basename(path):
        _write_state(state_path, [s for s in reversed(steps) if s <= chosen])
        if problem is not None:
            notes.append(
                f"{state_path}: {problem}; rebuilt it from the checkpoint files, resuming from {PREFIX}-{chosen}"
            )
    return Found(path, tuple(notes))


def damage(prefix: str) -> str | None:
    """Why the checkpoint ``prefix`` cannot be restored (its files are missing, truncated or
    corrupt), or None if every tensor in it reads back with a matching checksum.

    Raises:
      InputError: the files cannot be read for another reason (permissions, the network).
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except IndexError as error:  # how the reader reports a data file shorter than its index says
        return f"truncated: {error}"
    except _ACCESS_ERRORS as error:
        raise InputError(f"cannot read {prefix}: {_first_line(error.message)}; check access to it") from None
    except tf.errors.OpError as error:
        return _first_line(error.message)
    return None


def _steps_on_disk(directory: str) -> list[int]:
    """The steps of the ``ckpt-<step>`` files in ``directory``, newest first (a step whose
    ``.index`` is missing is included: it is an interrupted save, and damaged)."""
    with files.output_errors(directory):
        names = tf.io.gfile.listdir(directory)
    return sorted({int(match[1]) for match in map(_NUMBERED.match, names) if match}, reverse=True)


def _prefix(directory: str, step: int) -> str:
    return posixpath.join(directory, f"{PREFIX}-{step}")


def _read_state(path: str) -> tuple[str | None, str | None]:
    """The checkpoint the state file names (a base name) and what is wrong with the file, if anything."""
    if not tf.io.gfile.exists(path):
        return None, "missing"
    with files.output_errors(path):
        with tf.io.gfile.GFile(path, "rb") as f:
            content = f.read()
    state = CheckpointState()
    try:
        text_format.Parse(content.decode(), state)
    except (text_format.ParseError, UnicodeDecodeError) as error:
        return None, f"unreadable ({_first_line(str(error))})"
    if not state.model_checkpoint_path:
        return None, "empty"
    return posixpath.basename(state.model_checkpoint_path), None


def _write_state(path: str, steps: list[int]) -> None:
    """A state file listing ``ckpt-<step>`` for ``steps`` (oldest first), the last the latest.

    All get the current time as their timestamp, later than the oldest kept (0), so that the
    manager deletes the oldest of them as it writes new ones (`keep_checkpoints`).
    """
    names = [f"{PREFIX}-{step}" for step in steps]
    now = time.time()
    state = CheckpointState(
        model_checkpoint_path=names[-1],
        all_model_checkpoint_paths=names,
        all_model_checkpoint_timestamps=[now] * len(names),
        last_preserved_timestamp=0.0,
    )
    files.write_atomically(path, text_format.MessageToString(state).encode())


def _move_aside(directory: str, step: int) -> None:
    name = f"{PREFIX}-{step}"
    with files.output_errors(directory):
        for path in tf.io.gfile.glob(posixpath.join(directory, f"{name}.*")):
            target = posixpath.join(directory, BAD_PREFIX + posixpath.basename(path))
            tf.io.gfile.rename(path, target, overwrite=True)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "no detail"
