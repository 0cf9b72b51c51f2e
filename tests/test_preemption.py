"""Signals and lost workers: SIGTERM and Ctrl-C stop `fit` at a step boundary with a checkpoint,
under one device and under multi-worker (all workers at one step); a missing worker is named and
waited for with a timeout; a killed worker ends the others with one line. Real processes, real
signals; tiny models (channel_multiplier 0.125, 64×64 crops) on generated records.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from alexnet_tf import constants, preemption
from alexnet_tf.errors import InputError
from alexnet_tf.synthetic import write_synthetic_dataset
from alexnet_tf.training import cluster
from tests.cluster import free_ports, tf_configs
from tests.test_train import ENV, TINY

SMALL = [*TINY, "input.shuffle_buffer=64", "training.batch_size=8"]  # test_train's tiny model, smaller batches


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records"))
    write_synthetic_dataset(
        directory, num_classes=2, train_records=32, train_shards=4, validation_records=8, validation_shards=2,
        image_size=64,
    )  # fmt: skip
    return directory


def fit_args(records: str, run, *options: str) -> list[str]:
    return [
        "fit",
        "--data-dir",
        records,
        "--model-dir",
        str(run),
        "--quiet",
        *[f"--set={o}" for o in (*SMALL, *options)],
    ]


class Process:
    """An ``alexnet-tf`` process whose stdout and stderr go to files (read while it runs)."""

    def __init__(self, args: list[str], logs, env=None) -> None:
        self.out, self.err = logs.with_suffix(".out"), logs.with_suffix(".err")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen([sys.executable, "-m", "alexnet_tf", *args], env=env or ENV, stdout=out,
                                          stderr=err)  # fmt: skip

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, seconds: float) -> int:
        try:
            return self.popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"still running after {seconds} s; stderr:\n{self.stderr()[-3000:]}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def checkpoint_steps(run) -> list[int]:
    directory = run / "checkpoints"
    names = os.listdir(directory) if directory.is_dir() else []
    return sorted(int(name[len("ckpt-") : -len(".index")]) for name in names if re.fullmatch(r"ckpt-\d+\.index", name))


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# --- In one process: the mechanism ----------------------------------------------------------------


def test_signals_are_recorded_and_stop_at_the_next_check():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.StopSignals() as stop:
        stop.check()  # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)  # recorded, the process goes on
        with pytest.raises(preemption.Stopped) as stopped:
            stop.check()
        assert stopped.value.status == 143 and stopped.value.reason == "terminated (SIGTERM)"
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(preemption.Stopped) as stopped:
            stop.check()
        assert stopped.value.status == 143  # SIGTERM wins: the machine is going away
        with pytest.raises(KeyboardInterrupt) as forced:
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C: now
        assert not isinstance(forced.value, preemption.Stopped)
    assert signal.getsignal(signal.SIGTERM) == before


def test_wait_for_workers_returns_once_every_worker_answers_and_names_the_missing_ones(monkeypatch, capsys):
    mine, peer = free_ports(2)
    config = {"cluster": {"worker": [f"localhost:{mine}", f"localhost:{peer}"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    start = time.monotonic()
    with pytest.raises(InputError, match=rf"worker 1 at localhost:{peer} did not start within 0.5 s"):
        cluster.wait_for_workers(0.5)
    assert time.monotonic() - start < 5
    assert f"waiting for worker 1 at localhost:{peer} to start" in capsys.readouterr().err
    with socket.create_server(("localhost", peer)):  # worker 1 is up
        cluster.wait_for_workers(0.5)
    monkeypatch.setenv(constants.WORKER_TIMEOUT_ENV, "soon")
    with pytest.raises(InputError, match=r"ALEXNET_TF_WORKER_TIMEOUT='soon': must be a number of seconds > 0"):
        cluster.worker_timeout()
    monkeypatch.setenv(constants.WORKER_TIMEOUT_ENV, "7.5")
    assert cluster.worker_timeout() == 7.5 and cluster.worker_timeout(2) == 2


def test_a_lost_worker_is_named_from_what_tensorflow_reports(monkeypatch, tmp_path):
    """The two messages seen when a worker is killed: a refused or reset connection to it, and the
    coordination service's missed heartbeats (which names the reporting task first)."""
    config = {"cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    import tensorflow as tf

    tf.train.Checkpoint(step=tf.Variable(6)).write(str(tmp_path / "ckpt-6"))
    reset = (
        "Collective ops is aborted by: recvmsg:Connection reset by peer\nAdditional GRPC error information from "
        "remote target /job:worker/replica:0/task:0 while calling /tensorflow.WorkerService/CompleteInstance:"
    )
    assert cluster.went_away(reset, str(tmp_path)) == (
        "worker 0 at h0:2222 went away; re-run all workers to resume from step 6"
    )
    monkeypatch.setenv("TF_CONFIG", json.dumps({**config, "task": {"type": "worker", "index": 0}}))
    heartbeats = (
        "Collective ops is aborted by: Error reported from /job:worker/task:0: The following tasks are unhealthy "
        "(stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed."
    )
    assert cluster.went_away(heartbeats, str(tmp_path / "none")) == (
        "worker 1 at h1:2222 went away; re-run all workers to resume from step 0"
    )


# --- Real processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_or_ctrl_c_mid_epoch_saves_a_checkpoint_and_the_rerun_resumes_from_that_step(records, tmp_path):
    """One device. SIGTERM in epoch 2: a checkpoint at that step, exit 143; re-run: resumes there;
    Ctrl-C as soon as it trains: a checkpoint a step or more later, exit 130. (Resuming to the end
    is test_train's kill -9 test.)"""
    run = tmp_path / "run"
    args = fit_args(records, run, "training.steps_per_epoch=20", "training.epochs=2")

    def stop(name: str, signum: int, ready) -> tuple[Process, int]:
        process = Process(args, tmp_path / name)
        try:
            wait_for(lambda: ready(process) or process.popen.poll() is not None, 180, f"{name} to train")
            process.popen.send_signal(signum)
            status = process.wait(60)
        finally:
            process.kill()
        stderr = process.stderr()
        assert status == preemption.EXIT_STATUS[signum] and "Traceback" not in stderr, stderr[-3000:]
        reason = re.escape(preemption.Stopped(signum).reason)
        stopped = re.fullmatch(rf"{reason}: saved a checkpoint at step (\d+); re-run the same command to resume",
                               last_line(stderr))  # fmt: skip
        assert stopped, stderr[-3000:]
        assert checkpoint_steps(run)[-1] == int(stopped[1])
        return process, int(stopped[1])

    _, step = stop("sigterm", signal.SIGTERM, lambda _: 20 in checkpoint_steps(run))
    assert 20 < step < 40  # in epoch 2, not at its start
    resumed, interrupted = stop("ctrl-c", signal.SIGINT, lambda process: "training 2 epochs" in process.stdout())
    assert f"resuming from epoch 1 step {step} ({step - 20} of the epoch's 20 steps done)" in resumed.stdout()
    assert step < interrupted < 40


@pytest.mark.slow
def test_multi_worker_sigterm_stops_both_at_one_step_a_killed_worker_is_one_line_and_both_resume(records, tmp_path):
    """Two workers on localhost. SIGTERM to worker 1: both stop at one step, the chief saves it, both
    exit 143; re-run both: they resume there; kill -9 worker 1: worker 0 ends with one line naming
    it and the step to resume from; re-run both: they resume from that step and finish."""
    run = tmp_path / "run"
    # One short epoch: an epoch's end (validation, models, the next epoch's input) costs more than its steps.
    options = ("training.steps_per_epoch=12", "training.epochs=1", "training.checkpoint_every_steps=2")
    args = [*fit_args(records, run, *options), "--strategy", "multi-worker"]
    configs = tf_configs(2)
    address = json.loads(configs[0])["cluster"]["worker"]

    def start(round_: str) -> list[Process]:
        return [Process(args, tmp_path / f"{round_}{index}", env={**ENV, "TF_CONFIG": config})
                for index, config in enumerate(configs)]  # fmt: skip

    workers = start("sigterm")
    try:
        wait_for(lambda: checkpoint_steps(run) or workers[0].popen.poll() is not None, 180, "a first checkpoint")
        workers[1].popen.send_signal(signal.SIGTERM)
        statuses = [worker.wait(60) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    errors = [worker.stderr() for worker in workers]
    assert statuses == [143, 143], errors
    chief = re.fullmatch(r"another worker was terminated \(SIGTERM\): saved a checkpoint at step (\d+); re-run all "
                         r"workers to resume", last_line(errors[0]))  # fmt: skip
    other = re.fullmatch(r"terminated \(SIGTERM\): stopped at step (\d+) with the chief; re-run all workers to resume",
                         last_line(errors[1]))  # fmt: skip
    assert chief and other, errors
    stopped = int(chief[1])
    assert int(other[1]) == stopped < 12 and checkpoint_steps(run)[-1] == stopped

    workers = start("kill")
    try:
        wait_for(lambda: checkpoint_steps(run)[-1] > stopped or workers[0].popen.poll() is not None, 180,
                 "a checkpoint after the resume")  # fmt: skip
        workers[1].popen.send_signal(signal.SIGKILL)
        status = workers[0].wait(120)
    finally:
        for worker in workers:
            worker.kill()
    assert f"resuming from epoch 0 step {stopped} " in workers[0].stdout()
    stderr = workers[0].stderr()
    assert status == 1 and "Traceback" not in stderr, stderr[-3000:]
    latest = checkpoint_steps(run)[-1]
    assert [line for line in stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: worker 1 at {address[1]} went away; re-run all workers to resume from step {latest}"
    ], stderr[-3000:]
    assert last_line(stderr).startswith("Error:")

    workers = start("resume")
    try:
        statuses = [worker.wait(240) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert statuses == [0, 0], [worker.stderr()[-3000:] for worker in workers]
    assert f"resuming from epoch {latest // 12} step {latest} " in workers[0].stdout()
    assert checkpoint_steps(run)[-1] == 12


@pytest.mark.slow
def test_a_missing_worker_is_named_then_a_timeout_or_sigterm_ends_the_wait(records, tmp_path):
    """Worker 0 of one cluster and worker 1 of another, each alone: both say whom they wait for;
    the first gives up after its --worker-timeout, the second stops on SIGTERM."""
    alone = json.loads(tf_configs(2)[0])  # two clusters of two workers, one worker each started
    waiting = json.loads(tf_configs(2)[1])
    args = [*fit_args(records, tmp_path / "a"), "--strategy", "multi-worker"]
    timeout_run = Process([*args, "--worker-timeout", "2"], tmp_path / "timeout",
                          env={**ENV, "TF_CONFIG": json.dumps(alone)})  # fmt: skip
    signal_run = Process(args, tmp_path / "signal", env={**ENV, "TF_CONFIG": json.dumps(waiting)})
    try:
        wait_for(lambda: "waiting for" in signal_run.stderr() or signal_run.popen.poll() is not None, 120, "the wait")
        signalled = time.monotonic()
        signal_run.popen.send_signal(signal.SIGTERM)
        assert signal_run.wait(30) == 143
        assert time.monotonic() - signalled < 15
        timeout_status = timeout_run.wait(120)
    finally:
        timeout_run.kill()
        signal_run.kill()
    peer = alone["cluster"]["worker"][1]
    stderr = timeout_run.stderr()
    assert timeout_status == 1 and "Traceback" not in stderr, stderr
    assert f"worker 0 at {alone['cluster']['worker'][0]}: waiting for worker 1 at {peer} to start" in stderr
    assert last_line(stderr).startswith(f"Error: worker 0 at {alone['cluster']['worker'][0]}: worker 1 at {peer} did "
                                        "not start within 2 s; start every worker")  # fmt: skip
    stderr = signal_run.stderr()
    chief = waiting["cluster"]["worker"][0]
    assert last_line(stderr).endswith(f"terminated (SIGTERM) while waiting for worker 0 at {chief}; nothing to save")
    assert "Traceback" not in stderr
    assert not os.path.exists(tmp_path / "a")  # nothing written
