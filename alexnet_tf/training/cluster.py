"""The ``multi-worker`` cluster of ``TF_CONFIG``: waiting for every worker to start, and one
clear line when one goes away.

TensorFlow's own start-up (``MultiWorkerMirroredStrategy()``) blocks in C++ until every worker
has connected: silently, for as long as a worker is missing (worker 0 has no time limit), and
ignoring SIGTERM (its coordination service installs a SIGTERM handler that only takes note).
So before it, `wait_for_workers` meets the other workers itself: it listens on this worker's
port and tries to connect to every other worker's ``host:port`` until each has answered once
(a peer still in this wait answers on its own port, one already in TensorFlow's start-up on
TensorFlow's server there). Meanwhile it says which workers it waits for, honours SIGINT and
SIGTERM, and gives up after a timeout (`worker_timeout`: ``--worker-timeout`` or
``$ALEXNET_TF_WORKER_TIMEOUT``, default `DEFAULT_WORKER_TIMEOUT` seconds) with one line.
A worker that starts and dies between this wait and TensorFlow's is not covered.

A worker killed during training makes the others' next collective fail with an
``UnavailableError`` naming the task (``/job:worker/replica:0/task:1``); `lost_workers` turns it
into `WorkerLost`, whose message names the worker and its address and the step the run will
resume from (the newest checkpoint in the chief's ``RUN/checkpoints``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from types import FrameType

import tensorflow as tf

from alexnet_tf import errors, preemption
from alexnet_tf.constants import DEFAULT_WORKER_TIMEOUT, WORKER_TIMEOUT_ENV
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.training import checkpoints

# The jobs of MultiWorkerMirroredStrategy's cluster (an evaluator is not part of it).
JOBS = ("chief", "worker")
_TASK = re.compile(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)")


class WorkerLost(RuntimeError):
    """Another worker went away during training; the message says which and how to resume."""


def worker_timeout(seconds: float | None = None) -> float:
    """``seconds`` if given, else ``$ALEXNET_TF_WORKER_TIMEOUT``, else `DEFAULT_WORKER_TIMEOUT`."""
    if seconds is not None:
        if not seconds > 0:
            raise invalid("worker_timeout", seconds, "a number of seconds > 0")
        return seconds
    text = os.environ.get(WORKER_TIMEOUT_ENV)
    if not text:
        return DEFAULT_WORKER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise InputError(f"{WORKER_TIMEOUT_ENV}={text!r}: must be a number of seconds > 0")
    return value


def tasks() -> tuple[tuple[str, int], dict[tuple[str, int], str]]:
    """This process's task and the address of every task of the cluster, from ``TF_CONFIG``
    (already checked by `alexnet_tf.training.distribute`)."""
    spec = json.loads(os.environ["TF_CONFIG"])
    cluster = spec["cluster"]
    addresses = {(job, index): address for job in JOBS for index, address in enumerate(cluster.get(job, []))}
    return (spec["task"]["type"], int(spec["task"]["index"])), addresses


def describe(task: tuple[str, int], addresses: dict[tuple[str, int], str]) -> str:
    """``worker 1 at host:port``."""
    job, index = task
    address = addresses.get(task)
    return f"{job} {index} at {address}" if address else f"{job} {index}"


def wait_for_workers(timeout: float, poll: float = 0.2, report_every: float = 30.0) -> None:
    """Returns once every other worker of ``TF_CONFIG`` has answered on its address.

    Prints (stderr) which workers it waits for, then every ``report_every`` seconds.

    Raises:
      InputError: not all answered within ``timeout`` seconds, or this worker's port is taken.
      preemption.Stopped: SIGINT or SIGTERM arrived while waiting (nothing was trained).
    """
    me, addresses = tasks()
    if me not in addresses:
        return
    name = describe(me, addresses)
    missing = [task for task in addresses if task != me]
    if not missing:
        return
    own = _listen(addresses[me], name)

    def stop(signum: int, frame: FrameType | None) -> None:
        waiting = ", ".join(describe(task, addresses) for task in missing)
        _say(f"{name}: {preemption.Stopped(signum).reason} while waiting for {waiting}; nothing to save")
        raise preemption.Stopped(signum)

    previous = preemption.installed(stop)
    try:
        start = time.monotonic()
        reported = None
        while True:
            missing = [task for task in missing if not _answers(addresses[task])]
            if not missing:
                break
            elapsed = time.monotonic() - start
            waiting = ", ".join(describe(task, addresses) for task in missing)
            if elapsed >= timeout:
                raise InputError(
                    f"{name}: {waiting} did not start within {timeout:g} s; start every worker of TF_CONFIG's "
                    f"cluster ({len(addresses)} in all), or allow more time with `worker_timeout` or "
                    f"{WORKER_TIMEOUT_ENV}",
                    ("worker_timeout",),
                )
            if reported is None:
                waits = f"{name}: waiting for {waiting} to start (giving up after {timeout:g} s: `worker_timeout`)"
                _say(errors.worded(waits, ("worker_timeout",)))
                reported = elapsed
            elif elapsed - reported >= report_every:
                _say(f"{name}: still waiting for {waiting} ({elapsed:.0f} s of {timeout:g} s)")
                reported = elapsed
            time.sleep(poll)
        if reported is not None:
            _say(f"{name}: all {len(addresses)} workers are up")
    finally:
        own.close()
        preemption.restore(previous)


@contextlib.contextmanager
def lost_workers(strategy: tf.distribute.Strategy, checkpoint_dir: str) -> Iterator[None]:
    """Under ``multi-worker``: a collective that failed because a worker went away becomes
    `WorkerLost` (one line, no traceback); the run resumes from the newest checkpoint of
    ``checkpoint_dir``."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
        raise WorkerLost(went_away(error.message or "", checkpoint_dir)) from None


def went_away(message: str, checkpoint_dir: str) -> str:
    """The line for a collective that failed with ``message``: the worker it names (the one whose
    connection failed or that stopped sending heartbeats) and the step of the newest checkpoint
    a re-run resumes from (`alexnet_tf.training.checkpoints.find_checkpoint`)."""
    me, addresses = tasks()
    named = [(job, int(index)) for job, index in _TASK.findall(message)]
    others = [task for task in named if task != me]
    who = describe(others[0], addresses) if others else "another worker"
    latest = checkpoints.find_checkpoint(checkpoint_dir, repair=False).path
    step = int(latest.rsplit("-", 1)[1]) if latest else 0
    return f"{who} went away; re-run all workers to resume from step {step}"


def _listen(address: str, name: str) -> socket.socket:
    """A socket listening on ``address``'s port, so that the other workers see this one."""
    port = int(address.rsplit(":", 1)[1])
    try:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        return socket.create_server(("", port))
    except OSError as error:
        raise InputError(
            f"{name}: cannot listen on port {port} ({error.strerror or error}); is another process using it? "
            "Give this worker a free port in TF_CONFIG"
        ) from None


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:  # refused, unreachable, or a name that does not resolve yet
        return False
    return True


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
