"""A small process pool for prepare-data: one task per shard, progress streamed, stoppable.

Why not `multiprocessing.Pool` or `concurrent.futures.ProcessPoolExecutor`: a Pool waits
forever for a task whose worker was killed (e.g. by the OOM killer), and in Python < 3.14 an
executor cannot stop tasks that are running, so Ctrl-C would wait for whole shards to finish.
Here the parent owns plain `multiprocessing.Process` workers, talks to each over its own pipe
(no shared queue, locks or semaphores to leave behind), hands out the next task as a worker
returns a result, notices at once when a worker dies (its pipe closes), and can terminate
them all.

- Workers are started with ``spawn``: TensorFlow is not fork-safe, and a spawned worker imports
  only the task function's module (its TensorFlow import, whose start-up banner is muted, is
  needed for `tf.io.gfile` and the TFRecord writer; no TF op or thread pool is created).
- Workers ignore SIGINT: Ctrl-C reaches the parent, which terminates them; their unfinished
  temporary files are what the next run cleans up.
- A worker whose parent died (kill -9) stops at its next image instead of finishing a shard.
- ``workers=1`` runs the tasks in the calling process (no start-up cost; easy to debug).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from alexnet_tf.errors import InputError

Shared = TypeVar("Shared")
Task = TypeVar("Task")
Result = TypeVar("Result")
# fn(shared, task, progress) -> result; progress(n) reports n more items done.
TaskFunction = Callable[[Shared, Task, Callable[[int], None]], Result]

_PROGRESS_INTERVAL = 0.25  # seconds between a worker's progress messages


class WorkerError(RuntimeError):
    """A worker process died (killed, out of memory) or failed with an unexpected error;
    ``parameters``: those the message names (`alexnet_tf.errors`)."""

    def __init__(self, message: str, parameters: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.parameters = parameters


def default_workers() -> int:
    """The default number of worker processes: the CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_tasks(
    fn: TaskFunction,
    shared: Any,
    tasks: Sequence[Any],
    *,
    workers: int,
    on_result: Callable[[Any], None],
    on_progress: Callable[[int], None],
) -> None:
    """Runs ``fn(shared, task, progress)`` for every task on ``workers`` processes.

    ``on_result`` is called in this process, in completion order, with each result;
    ``on_progress(n)`` as work advances. `InputError` raised by a task is re-raised here as is;
    other task errors, and a worker that dies, raise `WorkerError`.
    """
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_result(fn(shared, task, on_progress))
        return
    context = multiprocessing.get_context("spawn")
    # The function goes by name and `shared` as bytes, so that the worker imports their modules
    # (TensorFlow) only inside `_quiet_stderr`.
    function, shared_bytes = f"{fn.__module__}:{fn.__qualname__}", pickle.dumps(shared)
    pending = collections.deque(tasks)
    busy: dict[Any, Any] = {}  # connection -> its worker process, while it holds a task
    processes = []
    try:
        for i in range(min(workers, len(tasks))):
            connection, child = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(function, shared_bytes, child, os.getpid()),
                name=f"prepare-worker-{i}",
                daemon=True,
            )
            process.start()
            child.close()
            processes.append(process)
            _send(connection, pending.popleft(), process)
            busy[connection] = process
        while busy:
            for connection in multiprocessing.connection.wait(list(busy)):
                try:
                    message = connection.recv()
                    if message[0] == "progress":
                        on_progress(message[1])
                    elif message[0] == "result":
                        on_result(message[1])
                        if pending:
                            connection.send(pending.popleft())
                        else:
                            connection.send(None)
                            del busy[connection]
                    else:
                        _, is_input_error, text = message
                        raise InputError(text) if is_input_error else WorkerError(f"a worker failed:\n{text}")
                except (EOFError, ConnectionError):  # the worker's end closed: it died
                    _died(busy[connection])
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)


def _send(connection: Any, task: Any, process: Any) -> None:
    """Sends a worker its first task; a worker that died before reading it is a `WorkerError`
    like any other death (the send fails with BrokenPipeError or ConnectionResetError)."""
    try:
        connection.send(task)
    except ConnectionError:
        _died(process)


def _died(process: Any) -> None:
    process.join(timeout=5)  # for its exit code
    raise WorkerError(
        f"worker {process.name} died (exit code {process.exitcode}; killed or out of memory? try fewer "
        "`workers`); re-run the same command to resume",
        ("workers",),
    )


def _worker_main(function: str, shared_bytes: bytes, connection: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    module, _, name = function.partition(":")
    with _quiet_stderr():
        fn = getattr(importlib.import_module(module), name)
        shared = pickle.loads(shared_bytes)
    reporter = _ProgressReporter(connection, parent)
    while (task := connection.recv()) is not None:
        try:
            result = fn(shared, task, reporter)
        except Exception as error:  # noqa: BLE001 - every failure goes to the parent, which raises it
            connection.send(("error", isinstance(error, InputError), _describe(error)))
            return
        reporter.flush()
        connection.send(("result", result))


def _describe(error: BaseException) -> str:
    if isinstance(error, InputError):
        return str(error)
    return "".join(traceback.format_exception(error)).rstrip()


class _ProgressReporter:
    """The ``progress`` callable inside a worker: batches counts, stops if orphaned."""

    def __init__(self, connection: Any, parent: int) -> None:
        self._connection, self._parent = connection, parent
        self._pending, self._last = 0, time.monotonic()

    def __call__(self, count: int) -> None:
        if os.getppid() != self._parent:
            os._exit(1)  # the parent was killed; a rerun will redo this shard
        self._pending += count
        if time.monotonic() - self._last >= _PROGRESS_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._connection.send(("progress", self._pending))
        self._pending, self._last = 0, time.monotonic()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Mutes file descriptor 2 (TensorFlow's C++ start-up banner) while importing."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
