"""Writing outputs so that no reader ever sees half of one, and saying plainly when we cannot.

Everything alexnet-tf writes under a final name (shards, metadata, PNGs, checkpoints' side
files, exported models) is first written under a *temporary name* beside it and renamed when
complete. Temporary names start with `TEMP_PREFIX` (``.tmp-<id>-<final name>``): hidden, and
matched by no reader's file pattern (Model Garden's ``train*``, our ``train-?????-of-?????``,
TF Serving's integer version directories), so an interrupted run never leaves anything that
looks like a finished output. Re-runs remove them with `remove_temporaries`.

All I/O goes through `tf.io.gfile`, so ``gs://`` works; there a rename is a copy and a delete,
so "atomic" means "never visible under the final name until complete", which is what readers
need.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import re
import uuid
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from alexnet_tf.errors import InputError

TEMP_PREFIX = ".tmp-"


def temporary_path(path: str, run_id: str | None = None) -> str:
    """The temporary name for ``path``: ``<dir>/.tmp-<run_id>-<name>`` (a fresh id if None)."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f"{TEMP_PREFIX}{run_id or uuid.uuid4().hex[:12]}-{name}")


def is_temporary(path: str) -> bool:
    """Whether ``path`` is a temporary name made by `temporary_path`."""
    return posixpath.basename(path).startswith(TEMP_PREFIX)


@contextlib.contextmanager
def atomic_path(path: str, run_id: str | None = None) -> Iterator[str]:
    """Yields a temporary path to write ``path``'s content to; renames it to ``path`` on success.

    Works for a file or a directory. On an exception the temporary is removed (best effort) and
    the exception propagates; ``path`` is left as it was. An existing ``path`` is replaced (a
    directory must be removed by the caller first: a rename does not merge directories).
    """
    temp = temporary_path(path, run_id)
    try:
        yield temp
        tf.io.gfile.rename(temp, path, overwrite=True)
    except BaseException:
        _remove_quietly(temp)
        raise


def rename_unless_exists(source: str, target: str) -> bool:
    """Renames the directory ``source`` to ``target`` unless ``target`` exists; False if it does
    (and ``source`` is left as it was).

    The claim for a name that several processes may want at once (export versions). On a local
    disk it is atomic: rename(2) refuses to replace a non-empty directory, so of two processes
    renaming complete directories onto one name exactly one succeeds (an *empty* directory under
    that name is replaced: nothing is lost). On ``gs://`` it is not: the existence check is a
    separate request and a directory rename copies and deletes object by object, so two
    processes racing for one name can both succeed and mix their objects.
    """
    try:
        tf.io.gfile.rename(source, target, overwrite=False)
        return True
    except (tf.errors.AlreadyExistsError, tf.errors.FailedPreconditionError):
        # AlreadyExists: gfile's own check saw it; FailedPrecondition: rename(2) found a
        # non-empty directory there (another process won the race after that check).
        if tf.io.gfile.exists(target):
            return False
        raise


@contextlib.contextmanager
def scratch_path(path: str) -> Iterator[str]:
    """Yields a temporary path for ``path`` (`temporary_path`); whatever is still there on exit is
    removed. For callers that choose the final name only when the content is complete (they
    rename it away themselves, e.g. with `rename_unless_exists`)."""
    temp = temporary_path(path)
    try:
        yield temp
    finally:
        _remove_quietly(temp)


def write_atomically(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary name and a rename (see the module docstring)."""
    with output_errors(path), atomic_path(path) as temp:
        with tf.io.gfile.GFile(temp, "wb") as f:
            f.write(data)


def write_png(path: str, figure: Any) -> tuple[int, int]:
    """Writes a matplotlib ``figure`` as a PNG at its own DPI to ``path`` (atomically); returns
    the PNG's (width, height) in pixels."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    write_atomically(path, buffer.getvalue())
    width, height = figure.get_size_inches() * figure.dpi
    return int(round(width)), int(round(height))


def remove_temporaries(directory: str, name: str | None = None) -> list[str]:
    """Removes the temporary files and directories left in ``directory`` by interrupted runs
    (only those of final name ``name`` if given)."""
    removed = []
    pattern = TEMP_PREFIX + ("*" if name is None else f"*-{name}")
    with output_errors(directory):
        for path in tf.io.gfile.glob(posixpath.join(directory, pattern)):
            _remove_quietly(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def output_errors(path: str) -> Iterator[None]:
    """Turns a failure to write an output (a missing parent, permissions, a full disk) into a
    one-line `InputError` naming ``path``."""
    try:
        yield
    except tf.errors.OpError as error:
        raise InputError(f"cannot write {path}: {_op_reason(error)}; check the output location") from None
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}; check the output location") from None


def _op_reason(error: tf.errors.OpError) -> str:
    """The first line of a TensorFlow error without the op's decorations that an eager op adds
    (``{{function_node …}} `` before, `` [Op:SaveV2]`` after): what failed, and why."""
    first = error.message.strip().splitlines()[0] if error.message.strip() else type(error).__name__
    return re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]$", "", first)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(tf.errors.OpError, OSError):
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
