"""Task functions for the `workers` tests: importable by spawned processes, no TensorFlow."""

from __future__ import annotations

import os
import signal

from alexnet_tf.errors import InputError


def square(offset: int, task: int, progress) -> int:
    progress(1)
    return task * task + offset


def misbehave(_: None, task: str, progress) -> str:
    if task == "input":
        raise InputError("bad input in a worker")
    if task == "bug":
        raise ZeroDivisionError("a bug in a worker")
    if task == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return task


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DiesWhenUnpickled:
    """Shared data that kills the worker unpickling it: a worker that dies before its first task."""

    def __reduce__(self):
        return _die, ()
