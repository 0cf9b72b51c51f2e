"""`workers.run_tasks`: results and progress from spawned workers, errors, a worker that dies."""

from __future__ import annotations

import pytest

from alexnet_tf.errors import InputError
from alexnet_tf.prepare.workers import WorkerError, run_tasks
from tests.worker_tasks import DiesWhenUnpickled, misbehave, square


def run(fn, shared, tasks, workers=2):
    results, progress = [], []
    run_tasks(fn, shared, tasks, workers=workers, on_result=results.append, on_progress=progress.append)
    return results, sum(progress)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_task_runs_once_with_progress(workers):
    results, progress = run(square, 10, list(range(7)), workers)
    assert sorted(results) == [t * t + 10 for t in range(7)] and progress == 7


@pytest.mark.parametrize(
    "task, error, message",
    [
        ("input", InputError, "^bad input in a worker$"),  # InputError keeps its one-line message
        ("bug", WorkerError, "ZeroDivisionError: a bug in a worker"),  # with the worker's traceback
        ("die", WorkerError, r"died \(exit code -9"),
    ],
)
def test_worker_failures_reach_the_parent(task, error, message):
    with pytest.raises(error, match=message):
        run(misbehave, None, ["fine", task, "fine", "fine"])


@pytest.mark.slow
def test_a_worker_that_dies_before_its_first_task_is_reported():
    """The parent is still sending the first task (larger than the pipe's buffer) when the worker
    dies: that BrokenPipeError used to escape, and the CLI then exited 1 without a message."""
    big = "x" * (4 << 20)
    with pytest.raises(WorkerError, match=r"^worker prepare-worker-\d died \(exit code -9"):
        run(misbehave, DiesWhenUnpickled(), [big, big])
