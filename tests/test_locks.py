"""One process per output directory (`alexnet_tf.locks`): the lock itself, stale locks, and two
real fit / prepare-data processes on one directory (the second refused; kill -9 of the first,
then a re-run that takes its lock over)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from alexnet_tf import locks, synthetic
from alexnet_tf.prepare.index import IndexConfig, index_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}


def lock_file(directory) -> str:
    return os.path.join(str(directory), locks.LOCK_FILE)


def write_lock(directory, **fields) -> None:
    """A lock file as another process would have left it (this process's, unless overridden)."""
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process": locks._process_identity(os.getpid()),
        "started": "2026-01-01T00:00:00+00:00",
        "command": "fit",
    } | fields
    os.makedirs(str(directory), exist_ok=True)
    with open(lock_file(directory), "w") as f:
        json.dump(owner, f)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- The lock --------------------------------------------------------------------------------------


def test_held_while_the_block_runs_and_removed_on_every_exit(tmp_path):
    directory = tmp_path / "run"
    with locks.lock_directory(str(directory), "fit"):
        with open(lock_file(directory)) as f:
            owner = json.load(f)
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["command"] == "fit"
        assert owner["process"] == locks._process_identity(os.getpid()) is not None
        with pytest.raises(locks.DirectoryInUse, match=rf"in use by alexnet-tf fit \(pid {os.getpid()} on "):
            with locks.lock_directory(str(directory), "prepare-data"):
                pass
        assert os.path.exists(lock_file(directory))  # the refused one left the owner's lock alone
    assert os.listdir(directory) == []
    for error in (ValueError("a failure"), KeyboardInterrupt()):
        with pytest.raises(type(error)), locks.lock_directory(str(directory), "fit"):
            raise error
        assert os.listdir(directory) == []


@pytest.mark.parametrize("stale", ["dead pid", "pid reused by another process"])
def test_a_stale_lock_on_this_host_is_taken_over_with_one_warning(tmp_path, caplog, stale):
    pid, process = (dead_pid(), None) if stale == "dead pid" else (os.getpid(), "an-earlier-boot/123")
    write_lock(tmp_path, pid=pid, process=process)
    with caplog.at_level(logging.WARNING, logger="alexnet_tf.locks"), locks.lock_directory(str(tmp_path), "fit"):
        with open(lock_file(tmp_path)) as f:
            assert json.load(f)["process"] == locks._process_identity(os.getpid())
    assert [record.getMessage() for record in caplog.records] == [
        f"{lock_file(tmp_path)}: took over the lock of alexnet-tf fit (pid {pid} on {socket.gethostname()}, "
        "started 2026-01-01T00:00:00+00:00), which is no longer running"
    ]
    assert not os.path.exists(lock_file(tmp_path))


def test_a_lock_of_another_host_or_an_unreadable_lock_is_refused(tmp_path, monkeypatch):
    write_lock(tmp_path, host="elsewhere", pid=dead_pid())
    with pytest.raises(locks.DirectoryInUse, match=r"locked by alexnet-tf fit \(pid \d+ on elsewhere, .*remove .*"):
        with locks.lock_directory(str(tmp_path), "fit"):
            pass
    monkeypatch.setattr(locks, "_UNREADABLE_SECONDS", 0.1)
    with open(lock_file(tmp_path), "w") as f:
        f.write('{"host": "vm", "pi')  # as if killed between the exclusive create and the write
    with pytest.raises(locks.DirectoryInUse, match=r"unreadable lock file; if no alexnet-tf process uses .*remove"):
        with locks.lock_directory(str(tmp_path), "fit"):
            pass
    assert os.path.exists(lock_file(tmp_path))  # never removed without an owner that is known dead


def test_of_many_takers_of_one_stale_lock_exactly_one_wins(tmp_path):
    """Threads stand in for processes: each opens the files on its own, and a lock of this pid
    that is not its own is a live owner's, so a thread that loses the race is refused."""

    def take(start: threading.Barrier, outcomes: list[str]) -> None:
        start.wait()
        try:
            with locks.lock_directory(str(tmp_path), "fit"):
                outcomes.append("held")
                time.sleep(0.3)
        except locks.DirectoryInUse:
            outcomes.append("refused")

    for _ in range(10):
        write_lock(tmp_path, pid=dead_pid())
        start, outcomes = threading.Barrier(8), []
        threads = [threading.Thread(target=take, args=(start, outcomes)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["held"] + ["refused"] * 7
        assert not os.path.exists(lock_file(tmp_path))


def test_other_file_systems_are_locked_best_effort(monkeypatch):
    """`tf.io.gfile`'s in-memory file system stands in for gs:// (no exclusive create)."""
    monkeypatch.setattr(locks, "REMOTE_SETTLE_SECONDS", 0.0)
    directory = "ram://locks-test/run"
    path = f"{directory}/{locks.LOCK_FILE}"
    with locks.lock_directory(directory, "fit"):
        assert tf.io.gfile.exists(path)
        with pytest.raises(locks.DirectoryInUse, match="in use by alexnet-tf fit"):
            with locks.lock_directory(directory, "fit"):
                pass
    assert not tf.io.gfile.exists(path)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "process": None,
                            "started": "then", "command": "fit"}))  # fmt: skip
    with locks.lock_directory(directory, "fit"):
        with tf.io.gfile.GFile(path) as f:
            assert json.loads(f.read())["pid"] == os.getpid()
    assert not tf.io.gfile.exists(path)


def test_index_records_refuses_an_output_in_use(tmp_path):
    records = str(tmp_path / "records")
    synthetic.write_synthetic_dataset(records, train_records=4, train_shards=1, validation_records=2)
    for name in ("metadata.json", "mean_image.npy"):
        os.remove(os.path.join(records, name))
    with locks.lock_directory(records, "index-records"):
        with pytest.raises(locks.DirectoryInUse, match="in use by alexnet-tf index-records"):
            index_records(IndexConfig(records, workers=1, progress=False))
        assert set(os.listdir(records)) == {locks.LOCK_FILE, *_shards(records)}  # nothing written
    index_records(IndexConfig(records, workers=1, progress=False))
    assert os.path.exists(os.path.join(records, "metadata.json")) and not os.path.exists(lock_file(records))


def _shards(directory: str) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(("train-", "validation-"))]


# --- Two real processes on one directory --------------------------------------------------------


def _wait_for(path: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        assert process.poll() is None, f"the first process ended ({process.returncode}) before taking the lock"
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.01)


def _snapshot(directory) -> dict[str, tuple[int, int]]:
    found = {}
    for folder, _, names in os.walk(str(directory)):
        for name in names:
            stat = os.stat(os.path.join(folder, name))
            found[os.path.join(folder, name)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _refused_while_stopped_then_taken_over(command: list[str], directory, what: str) -> subprocess.CompletedProcess:
    """Starts ``command``, stops it (SIGSTOP) once it holds ``directory``'s lock, runs the same
    command again (refused: one error line naming the owner, nothing touched), kill -9s the
    owner and runs the command a third time: it takes the lock over and finishes; returns that run."""
    owner = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lock_file(directory), owner)
        owner.send_signal(signal.SIGSTOP)
        before = _snapshot(directory)
        second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"is in use by alexnet-tf {what} (pid {owner.pid} on {socket.gethostname()}" in errors[0]
        assert _snapshot(directory) == before  # the refused run changed nothing
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert os.path.exists(lock_file(directory))  # kill -9 leaves the lock behind
    third = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert f"took over the lock of alexnet-tf {what} (pid {owner.pid} on" in third.stderr
    assert not os.path.exists(lock_file(directory))
    return third


@pytest.mark.slow
def test_two_fits_on_one_run_directory(tmp_path):
    records = str(tmp_path / "records")
    synthetic.write_synthetic_dataset(records, num_classes=2, train_records=32, validation_records=8, image_size=72)
    run = tmp_path / "run"
    options = ["model.channel_multiplier=0.125", "input.crop_size=64", "training.batch_size=16", "training.epochs=2",
               "training.seed=0"]  # fmt: skip
    command = [sys.executable, "-m", "alexnet_tf", "fit", "--data-dir", records, "--model-dir", str(run), "--quiet",
               *[f"--set={option}" for option in options]]  # fmt: skip
    _refused_while_stopped_then_taken_over(command, run, "fit")
    with open(run / "history.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()] == ["epoch", "0", "1"]


@pytest.mark.slow
def test_two_prepare_data_runs_on_one_output(tmp_path):
    """Used to fail in the second run with "cannot write … No such file or directory"."""
    source = str(tmp_path / "images")
    synthetic.write_image_folder(source, classes=2, per_class=60, sizes=((320, 240), (240, 320)))
    output = tmp_path / "records"
    command = [sys.executable, "-m", "alexnet_tf", "prepare-data", source, str(output), "--workers", "1",
               "--no-progress", "--train-shards", "4", "--val-fraction", "0.25"]  # fmt: skip
    third = _refused_while_stopped_then_taken_over(command, output, "prepare-data")
    assert "Wrote 90 train records in 4 shards and 30 validation records" in third.stdout
