"""The job helper (`alexnet_tf.jobs`): recorded options compared on a re-run, checkpoints every N
seconds or units, a last save on the way out, and Ctrl-C / SIGTERM as a `Stopped` that says what
was kept; then prepare-data stopped by a real SIGTERM saves its shards, exits 143 and resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from alexnet_tf import jobs, preemption
from alexnet_tf.errors import InputError
from alexnet_tf.prepare import resume
from tests.tiny_imagenet import make_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- Options: recorded, compared, refused ---------------------------------------------------------


@pytest.mark.parametrize(
    "recorded, current, changed",
    [
        ({"a": 1, "b": "x"}, {"a": 1, "b": "x"}, []),
        ({"a": 1, "b": "x"}, {"b": "y", "a": 1}, ["b"]),
        ({"a": 1}, {"a": 1, "c": None}, []),  # a missing option counts as None
        ({"a": 1}, {"a": 1, "c": 0}, ["c"]),
        # A recipe's sections are compared key by key, even when a key holds dots (a search space's).
        ({"training": {"epochs": 1, "seed": 0}}, {"training": {"epochs": 2, "seed": 0}}, ["training.epochs"]),
        ({"space": {"model.dropout": {"max": 0.5}}}, {"space": {"model.dropout": {"max": 0.6}}},
         ["space.model.dropout.max"]),
        ({}, {"model": {"dropout": 0.5}}, ["model.dropout"]),  # a missing section: an empty one
    ],
)  # fmt: skip
def test_changed_options_names_each_difference(recorded, current, changed):
    assert jobs.changed_options(recorded, current) == changed


def test_a_changed_rerun_is_refused_naming_both_values_unless_allowed():
    recorded = {"seed": 0, "space": {"model.dropout": {"max": 0.5}}}
    current = {"seed": 1, "space": {"model.dropout": {"max": 0.6}}}
    with pytest.raises(InputError) as refused:
        jobs.check_options(recorded, current, "OUT was made with other options", "pass `overwrite=True`", ["overwrite"])
    assert str(refused.value) == (
        "OUT was made with other options (seed: 0 -> 1; space.model.dropout.max: 0.5 -> 0.6); pass `overwrite=True`"
    )
    assert refused.value.parameters == ("overwrite",)
    allowed = jobs.check_options(recorded, current, "OUT", "", allow_change=True)
    assert allowed == ["seed", "space.model.dropout.max"]
    assert jobs.check_options(recorded, dict(recorded), "OUT", "") == []


# --- Checkpoints ------------------------------------------------------------------------------------


def test_finished_units_are_checkpointed_every_n_units_or_seconds():
    saves = []
    with jobs.Job(lambda: saves.append(len(done)), steps=3) as job:
        done = []
        due = [job.finished(lambda: done.append(1)) for _ in range(7)]
    assert due == [False, False, True, False, False, True, False] and saves == [3, 6]

    saves.clear()
    with jobs.Job(lambda: saves.append(1), seconds=0.05) as job:
        assert not job.finished()
        time.sleep(0.06)
        assert job.finished() and not job.finished()
    assert saves == [1]


def test_leaving_by_an_error_saves_once_more_and_a_failed_save_does_not_hide_the_error():
    saves = []
    with pytest.raises(RuntimeError, match="a worker died"), jobs.Job(lambda: saves.append(1), seconds=60):
        raise RuntimeError("a worker died")
    assert saves == [1]

    def full_disk() -> None:
        raise InputError("cannot write checkpoint.npz: no space left")

    with pytest.raises(RuntimeError, match="a worker died"), jobs.Job(full_disk):
        raise RuntimeError("a worker died")
    with jobs.Job(lambda: saves.append(2)):  # no error: the job saves at its end itself
        pass
    assert saves == [1]


def test_save_on_limits_the_last_save_to_the_named_exceptions():
    # fit's loop: a stop saves the step it reached; a NaN loss must keep the last good checkpoint.
    saves = []
    with (
        pytest.raises(ValueError, match="loss is nan"),
        jobs.Job(lambda: saves.append(1), save_on=(preemption.Stopped,)),
    ):
        raise ValueError("loss is nan")
    assert saves == []
    with pytest.raises(preemption.Stopped), jobs.Job(lambda: saves.append(2), save_on=(preemption.Stopped,)):
        raise preemption.Stopped(signal.SIGTERM)
    assert saves == [2]


# --- Stop signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_job_with_its_note_after_a_last_save(signum):
    saves = []
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(preemption.Stopped) as stopped:
        with jobs.Job(lambda: saves.append(1), kept="the shards are kept; re-run it", parameters=["overwrite"]):
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
    assert stopped.value.status == preemption.EXIT_STATUS[signum] and saves == [1]
    assert stopped.value.note == "the shards are kept; re-run it" and stopped.value.parameters == ("overwrite",)
    assert str(stopped.value) == f"{preemption.Stopped(signum).reason}: the shards are kept; re-run it"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # put back


def test_a_signal_while_a_unit_is_recorded_stops_only_after_the_whole_unit():
    """The checkpoint must never hold half a unit (prepare-data: a shard's counts without its
    statistics): the signal waits until `finished` returns, then stops the job."""
    state: dict[str, int] = {}

    def record() -> None:
        state["counts"] = 1
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here, between the two halves
        state["stats"] = 1

    saved = []
    job = jobs.Job(lambda: saved.append(dict(state)), kept="kept")
    with pytest.raises(preemption.Stopped), job:
        job.finished(record)
        time.sleep(5)  # not reached
    assert state == {"counts": 1, "stats": 1} and saved == [{"counts": 1, "stats": 1}]


def test_a_plain_ctrl_c_becomes_the_jobs_stop_and_a_stop_already_said_passes_unchanged():
    with pytest.raises(preemption.Stopped) as stopped, jobs.Job(kept="the trials are kept"):
        raise KeyboardInterrupt  # e.g. raised by code, or a job outside the main thread
    assert stopped.value.status == 130 and stopped.value.note == "the trials are kept"
    said = preemption.Stopped(signal.SIGTERM)  # fit's loop inside tune: it printed its own line
    with pytest.raises(preemption.Stopped) as stopped, jobs.Job(kept="the trials are kept"):
        raise said
    assert stopped.value is said and stopped.value.note is None


# --- A real SIGTERM ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_prepare_data_stopped_by_sigterm_saves_its_shards_exits_143_and_resumes(tmp_path):
    """SIGTERM mid-run (not the 30 s checkpoint): the shards finished so far are checkpointed at
    once, the command says so in one line and exits 143; the re-run keeps them."""
    data = make_dataset(str(tmp_path / "imagenet"), per_class=4, val_per_class=1, quirks=False)
    output = str(tmp_path / "records")
    harness = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from alexnet_tf.cli import main
        from alexnet_tf.prepare import images
        original, calls = images.prepare_image, [0]
        def slow(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 7:  # two shards of three images are finished
                print("ready", file=sys.stderr, flush=True)
                time.sleep(60)
            return original(*args, **kwargs)
        images.prepare_image = slow
        main(["prepare-data", {data.root!r}, {output!r}, "--train-shards", "4", "--validation-shards", "1",
              "--workers", "1", "--no-progress"])
        """
    )
    process = subprocess.Popen([sys.executable, "-c", harness], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        while process.stderr.readline().strip() not in ("ready", ""):
            pass
        process.send_signal(signal.SIGTERM)
        status = process.wait(30)
        stderr = process.stderr.read()
    finally:
        process.kill()
    assert status == 143 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (
        "terminated (SIGTERM): the finished shards are kept; re-run the same command to resume"
    )
    assert len(resume.Checkpoint.load(output, 256).shards) == 2
    from click.testing import CliRunner

    from alexnet_tf.cli import main

    again = CliRunner().invoke(main, ["prepare-data", data.root, output, "--train-shards", "4",
                                      "--validation-shards", "1", "--workers", "1", "--no-progress"])  # fmt: skip
    assert again.exit_code == 0 and "2 shards kept from the interrupted run" in again.output, again.output
