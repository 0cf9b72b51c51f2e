"""``alexnet-tf data-service`` and ``fit --data-service``: a dispatcher (fault-tolerant, with a work
directory) and two workers in real processes on 127.0.0.1; fit over them, with two trainers;
kill -9 of a service worker, of the trainer and of the dispatcher; SIGTERM and Ctrl-C of the
servers; and every refusal in one line. Tiny models on generated records (test_train's).

The tests of this file share one service and run in order: the last ones kill its processes.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import pytest

from alexnet_tf import data_service, preemption
from alexnet_tf.errors import InputError
from alexnet_tf.input import bad_records
from alexnet_tf.input import service as input_service
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.recipe import load_recipe
from alexnet_tf.synthetic import write_synthetic_dataset
from alexnet_tf.training import cluster
from alexnet_tf.training.fit import FitConfig, fit
from alexnet_tf.training.loop import PAUSE_ENV
from tests.bad_data import gif, replace_image
from tests.cluster import free_ports, tf_configs
from tests.test_preemption import Process, checkpoint_steps, last_line, wait_for
from tests.test_train import ENV, TINY, read_history, tiny

EPOCHS = 5
STEPS = 8  # 128 records / batch 16


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """test_train's 4 tinted classes (128 training and 32 validation records), in 5 training shards
    so that each holds every class, as prepare-data's shuffled shards do: through the service a
    batch is made on one worker from the shards it was given (test_train's 4 shards hold one class
    each, and batches of one or two classes learned visibly worse)."""
    directory = str(tmp_path_factory.mktemp("records"))
    write_synthetic_dataset(
        directory, num_classes=4, train_records=128, train_shards=5, validation_records=32, image_size=72
    )
    return directory


class Service:
    """A dispatcher with a work directory and two workers, each an ``alexnet-tf data-service`` process."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.port = free_ports(1)[0]
        self.address = f"grpc://127.0.0.1:{self.port}"
        self.dispatcher = self.start_dispatcher("dispatcher")
        self.workers = [
            Process(["data-service", "worker", "--dispatcher", self.address, "--host", "127.0.0.1"], directory / name)
            for name in ("worker0", "worker1")
        ]
        wait_for(lambda: "2 worker(s)" in self.dispatcher.stderr(), 120, "two workers to register")

    def start_dispatcher(self, name: str) -> Process:
        work_dir = str(self.directory / "work")
        return Process(["data-service", "dispatcher", "--port", str(self.port), "--work-dir", work_dir],
                       self.directory / name)  # fmt: skip

    def tasks(self, worker: int) -> int:
        """The number of tasks (one per job) a worker said it has, last."""
        counts = re.findall(r": (\d+) task\(s\)", self.workers[worker].stderr())
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        for process in (self.dispatcher, *self.workers):
            process.kill()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    started = Service(tmp_path_factory.mktemp("service"))
    yield started
    started.stop()


def service_args(records: str, run, address: str, *options: str) -> list[str]:
    sets = [f"--set={o}" for o in (*TINY, *options)]
    return ["fit", "--data-dir", records, "--model-dir", str(run), "--quiet", "--data-service", address, *sets]


def tasks_after(service: Service, before: list[int], added: int) -> None:
    """Waits until each live worker says it has ``added`` more tasks than ``before``: one per job."""
    expected = [n + added for n in before]
    counts = lambda: [service.tasks(i) for i in range(len(before))]  # noqa: E731
    try:
        wait_for(lambda: counts() == expected, 10, f"{expected} tasks")
    except AssertionError as error:
        raise AssertionError(f"{error}; the workers have {counts()}") from None


@pytest.mark.slow
def test_two_trainers_over_the_service_learn_like_the_local_pipeline_and_share_each_epochs_job(
    service, records, tmp_path
):
    """multi-worker over the service (two trainers, global batch 16) against one process on its
    own pipeline (batch 16): the same bar and loss range; and both trainers read one job per
    epoch (each service worker gets one task per epoch, not one per trainer)."""
    before = [service.tasks(0), service.tasks(1)]
    trainers = []
    for index, tf_config in enumerate(tf_configs(2)):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = {**ENV, "TF_CONFIG": tf_config, "TMPDIR": str(scratch)}
        args = [*service_args(records, tmp_path / "service", service.address, f"training.epochs={EPOCHS}"),
                "--strategy", "multi-worker"]  # fmt: skip
        trainers.append(Process(args, tmp_path / f"trainer{index}", env=env))
    local = fit(FitConfig(records, str(tmp_path / "local"), tiny(f"training.epochs={EPOCHS}"), verbose=False))
    for trainer in trainers:
        assert trainer.wait(240) == 0, trainer.stderr()[-3000:]
    assert "over 2 replica(s) (multi-worker)" in trainers[0].stdout()
    history = read_history(tmp_path / "service")
    assert [int(row["epoch"]) for row in history] == list(range(EPOCHS))
    losses, local_losses = [float(row["loss"]) for row in history], [row["loss"] for row in local.history]
    # test_train's bar for the local pipeline (chance is 0.25), met by both, and the same loss range.
    assert max(float(row["val_top1"]) for row in history) >= 0.5 and local.best_val_top1 >= 0.5
    assert losses[-1] < losses[0] and local_losses[-1] < local_losses[0]
    assert abs(losses[-1] - local_losses[-1]) < 0.35, (losses, local_losses)
    tasks_after(service, before, EPOCHS)


@pytest.mark.slow
def test_killed_service_worker_trainer_and_dispatcher(service, records, tmp_path):
    """kill -9 of a service worker mid-epoch: training goes on with the other. kill -9 of the
    trainer and the dispatcher mid-epoch, the dispatcher restarted on its work directory, fit again:
    it resumes at the checkpoint and re-joins the epoch's job, which the dispatcher recovered (no
    new task for it), and finishes with the one worker left."""
    run, epochs = tmp_path / "run", 4
    options = [f"training.epochs={epochs}", "training.checkpoint_every_steps=4"]
    before = [service.tasks(0)]
    with open(tmp_path / "paused.out", "w") as out, open(tmp_path / "paused.err", "w") as err:
        trainer = subprocess.Popen([sys.executable, "-m", "alexnet_tf", *service_args(records, run, service.address,
                                    *options)], env={**ENV, PAUSE_ENV: "checkpoint-20"}, stdin=subprocess.PIPE,
                                   stdout=out, stderr=err)  # fmt: skip
    try:
        wait_for(lambda: any(step > STEPS for step in checkpoint_steps(run)), 180, "training in epoch 2")
        service.workers[1].popen.send_signal(signal.SIGKILL)  # mid-epoch 2 (steps 9-16)
        wait_for(lambda: "paused at checkpoint-20" in (tmp_path / "paused.err").read_text(), 180, "step 20")
        service.dispatcher.popen.send_signal(signal.SIGKILL)
    finally:
        trainer.kill()
        trainer.wait()
    assert service.workers[1].popen.wait() == -signal.SIGKILL
    service.dispatcher.popen.wait()
    service.dispatcher = service.start_dispatcher("restarted")  # the same --work-dir
    recipe = tiny(*options, f"input.data_service={service.address}")
    resumed = fit(FitConfig(records, str(run), recipe, verbose=False))
    assert resumed.resumed_from == (2, 20) and resumed.epochs == epochs
    assert "state in" in service.dispatcher.stderr()
    assert [int(row["epoch"]) for row in read_history(run)] == list(range(epochs))
    tasks_after(service, before, epochs)  # not epochs + 1: the resumed epoch's job was re-joined


@pytest.mark.slow
def test_the_servers_stop_on_sigterm_and_ctrl_c_with_the_shells_status(service):
    """A worker with tasks ends at once (TensorFlow's own stop can wait for an hour); the dispatcher
    stops."""
    stops = [(service.workers[0], signal.SIGTERM, 143, "terminated (SIGTERM); stopped"),
             (service.dispatcher, signal.SIGINT, 130, "interrupted (Ctrl-C); stopped")]  # fmt: skip
    assert service.tasks(0) > 0
    for process, signum, status, expected in stops:
        process.popen.send_signal(signum)
        assert process.wait(30) == status
        stderr = process.stderr()
        assert re.fullmatch(rf"data-service \w+ on port \d+: {re.escape(expected)}", last_line(stderr)), stderr
        assert "Traceback" not in stderr


def test_serve_stops_a_dispatcher_on_sigterm():
    """In one process: SIGTERM while `serve` runs stops the server and raises `Stopped` (143)."""
    import tensorflow as tf

    dispatcher = tf.data.experimental.service.DispatchServer()
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(preemption.Stopped) as stopped:
        data_service.serve(dispatcher, "dispatcher", lambda: f"{dispatcher._num_workers()} worker(s)")
    assert stopped.value.status == 143
    assert not cluster._answers(dispatcher._address)  # stopped: nothing listens on its port


def test_a_bad_record_read_on_a_worker_stops_the_run_with_the_usual_line(records, tmp_path):
    """In one process (the servers too): the worker's in-graph error reaches the trainer, and
    `bad_records.explained` names the shard and the record as it does locally."""
    import tensorflow as tf

    damaged = str(tmp_path / "records")
    shutil.copytree(records, damaged)
    replace_image(os.path.join(damaged, "train-00001-of-00005"), 1, gif())
    dispatcher = tf.data.experimental.service.DispatchServer()
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=dispatcher._address)
    )
    pipeline = InputPipeline(InputConfig(damaged, batch_size=16, crop_size=64, normalize_in_model=True, seed=0))
    dataset = input_service.distribute(pipeline.train_dataset(tf.distribute.InputContext()), dispatcher.target, "bad")
    with pytest.raises(InputError, match=r"train-00001-of-00005: record 1 is not a JPEG image \(a GIF\)"):
        with bad_records.explained(damaged):
            for _ in dataset.take(16):  # two passes: every record
                pass
    worker.stop()
    dispatcher.stop()


# --- One line for what cannot work -----------------------------------------------------------


def test_refusals_in_the_library(records, tmp_path, monkeypatch):
    service = "input.data_service=grpc://127.0.0.1:1"
    with pytest.raises(InputError, match=r"input.data_service='data:service' is impossible; use null or a dispatcher"):
        load_recipe(None, ["input.data_service=data:service"])
    with pytest.raises(InputError, match=r"input.data_service with input.deterministic=true: .* set input.det"):
        input_service.check_can_start(tiny(service, "input.deterministic=true"), False, 1)
    with pytest.raises(InputError, match=r"--skip-bad-records with input.data_service: .*Python calls"):
        input_service.check_can_start(tiny(service), True, 1)
    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        # TensorFlow's gRPC servers would start on it anyway (SO_REUSEPORT): the check comes first.
        with pytest.raises(InputError, match=rf"dispatcher on port {port}: the port is in use"):
            data_service.run_dispatcher(port)
        with pytest.raises(InputError, match=rf"worker on port {port}: the port is in use"):
            data_service.run_worker(f"127.0.0.1:{port}", port)
    (closed,) = free_ports(1)
    with pytest.raises(InputError) as unreachable:
        data_service.run_worker(f"127.0.0.1:{closed}", timeout=0.5)
    assert str(unreachable.value) == (
        f"data-service worker: no tf.data service dispatcher answers at 127.0.0.1:{closed} (waited 0.5 s); "
        f"start `alexnet-tf data-service dispatcher --port {closed}` on 127.0.0.1, or correct --dispatcher"
    )
    monkeypatch.setenv("ALEXNET_TF_WORKER_TIMEOUT", "0.5")
    with pytest.raises(InputError) as unreachable:
        fit(FitConfig(records, str(tmp_path / "run"), tiny(f"input.data_service=grpc://127.0.0.1:{closed}")))
    assert str(unreachable.value) == (
        f"fit: no tf.data service dispatcher answers at grpc://127.0.0.1:{closed} (waited 0.5 s); start "
        f"`alexnet-tf data-service dispatcher --port {closed}` on 127.0.0.1, or correct --data-service "
        "(input.data_service)"
    )
    assert not os.path.exists(tmp_path / "run")  # refused before anything was written
    assert data_service.target("data-0:5050") == data_service.target("grpc://data-0:5050") == "grpc://data-0:5050"


@pytest.mark.slow
def test_refusals_on_the_command_line_are_one_line_and_write_nothing(records, tmp_path):
    run = tmp_path / "run"
    fit_args = ["fit", "--data-dir", records, "--model-dir", str(run), *[f"--set={o}" for o in TINY]]
    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        cases = [
            ([*fit_args, "--data-service", "grpc://host"], {},
             "input.data_service='grpc://host' is impossible; use null or a dispatcher's address, grpc://HOST:PORT"),
            (["data-service", "worker", "--dispatcher", "nowhere"], {},
             "Error: --dispatcher 'nowhere': expected a tf.data service dispatcher's address, grpc://HOST:PORT"),
            (["data-service", "dispatcher", "--port", str(port)], {},
             f"Error: data-service dispatcher on port {port}: the port is in use (Address already in use)"),
        ]  # fmt: skip
        for args, env, expected in cases:
            result = subprocess.run([sys.executable, "-m", "alexnet_tf", *args], env={**ENV, **env},
                                    capture_output=True, text=True)  # fmt: skip
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and lines[-1].startswith("Error: ") and expected in lines[-1], result.stderr
            assert "Traceback" not in result.stderr
    assert not os.path.exists(run)
