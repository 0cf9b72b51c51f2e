"""``alexnet-tf tune``: a tiny search completes, resumes (a killed trial is re-run), and writes a
recipe that `load_recipe` and `fit` accept.

Tiny models (channel multiplier 0.125, 64×64 crops) on 4 tinted classes of 72×72 records, one
epoch per trial.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from alexnet_tf.cli import main
from alexnet_tf.errors import InputError
from alexnet_tf.recipe import load_recipe
from alexnet_tf.synthetic import write_synthetic_dataset
from alexnet_tf.training import precision
from alexnet_tf.training.fit import FitConfig, fit
from alexnet_tf.tuning import search
from alexnet_tf.tuning.search import TuneConfig, tune
from alexnet_tf.tuning.space import load_space

TINY = (
    "model.channel_multiplier=0.125",
    "input.crop_size=64",
    "input.shuffle_buffer=64",
    "schedule.batch_scaling=none",
    "training.seed=0",
)
SPACE = {
    "optimizer.learning_rate": {"min": 0.001, "max": 0.03, "sampling": "log"},
    "model.local_response_normalization": {"values": [True, False]},
    "model.initialization": {"values": ["he"]},
    "training.batch_size": {"values": [8, 16]},
    "optimizer.weight_decay": None,  # a default key dropped
}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records"))
    write_synthetic_dataset(
        directory, num_classes=4, train_records=64, train_shards=2, validation_records=16, image_size=72
    )
    return directory


@pytest.fixture()
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return str(path)


def config(records, tune_dir, space_file, **kwargs) -> TuneConfig:
    return TuneConfig(records, tune_dir, overrides=TINY, space_path=space_file, epochs=1, **kwargs)


def test_search_completes_resumes_and_writes_a_recipe(records, space_file, tmp_path, monkeypatch):
    tune_dir = str(tmp_path / "tune")
    calls = []
    real_fit = search.fit

    def fit_killed_in_trial_1(fit_config):
        calls.append(fit_config.model_dir)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process "dies" during the second trial
        return real_fit(fit_config)

    monkeypatch.setattr(search, "fit", fit_killed_in_trial_1)
    with pytest.raises(KeyboardInterrupt):
        tune(config(records, tune_dir, space_file, max_trials=3))
    monkeypatch.setattr(search, "fit", real_fit)

    def run_cli():
        return CliRunner().invoke(
            main,
            ["tune", "--data-dir", records, "--tune-dir", tune_dir, "--space", space_file, "--max-trials", "3",
             "--epochs", "1", *(arg for override in TINY for arg in ("--set", override))],
        )  # fmt: skip

    result = run_cli()
    assert result.exit_code == 0, result.output
    # The killed trial ran again (same id, same run directory), then the third: three in all.
    assert "trial 1:" in result.output and "trial 2:" in result.output and "trial 0:" not in result.output
    table = result.output[result.output.index("trial  status") :].splitlines()[2:5]
    assert [line.split()[:2] for line in table] == [["0", "COMPLETED"], ["1", "COMPLETED"], ["2", "COMPLETED"]]
    assert os.path.isdir(os.path.join(tune_dir, "search", "trial_1", "run", "checkpoints"))
    # Each trial's fit decides training.mixed_precision: auto for this host, says so and records it.
    assert "precision: " in result.output
    with open(os.path.join(tune_dir, "search", "trial_1", "run", "recipe.yaml")) as f:
        assert yaml.safe_load(f)["training"]["mixed_precision"] == precision.host_choice().value

    best = os.path.join(tune_dir, "best.yaml")
    recipe = load_recipe(best)  # fit --pipeline reads it the same way
    assert recipe.model.channel_multiplier == 0.125 and recipe.model.initialization == "he"
    assert recipe.training.batch_size in (8, 16)
    assert 0.001 <= recipe.optimizer.learning_rate <= 0.03
    assert recipe.training.mixed_precision == "auto"  # decided again wherever it is trained
    with open(best) as f:
        assert "validation top-1" in f.readline()
    # fit trains with it (shortened here to one epoch; the file keeps the base recipe's epochs).
    trained = fit(
        FitConfig(records, str(tmp_path / "best-run"), load_recipe(best, ["training.epochs=1"]), verbose=False)
    )
    assert trained.epochs == 1

    # Re-running a finished search trains nothing more.
    again = run_cli()
    assert again.exit_code == 0, again.output
    assert "trial 0:" not in again.output and "trial 2:" not in again.output
    assert again.output.count("COMPLETED") == 3


def test_a_changed_search_is_refused(records, space_file, tmp_path):
    tune_dir = str(tmp_path / "tune")
    tune(config(records, tune_dir, space_file, max_trials=1))
    with pytest.raises(InputError, match=r"other settings \(epochs: 1 -> 2\)"):
        tune(TuneConfig(records, tune_dir, overrides=TINY, space_path=space_file, epochs=2, max_trials=1))


def test_a_search_stopped_before_any_trial_finished_restarts_with_new_settings(
    records, space_file, tmp_path, monkeypatch
):
    """A first search whose first trial could not run (here: fit refuses it) leaves its settings;
    the corrected command is not refused as "a different search" but starts afresh."""
    tune_dir = str(tmp_path / "tune")

    def refused(fit_config):
        raise InputError("this trial cannot run")

    monkeypatch.setattr(search, "fit", refused)
    with pytest.raises(InputError, match="this trial cannot run"):
        tune(config(records, tune_dir, space_file, max_trials=1))
    monkeypatch.undo()
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump({**SPACE, "training.batch_size": {"values": [8]}}))
    result = tune(config(records, tune_dir, str(smaller), max_trials=1))
    assert [row.status for row in result.trials] == ["COMPLETED"]
    assert result.trials[0].values["training.batch_size"] == 8
    # Once a trial has finished, a changed search is refused again.
    with pytest.raises(InputError, match=r"other settings \(space\.training\.batch_size\.values: \[8\] -> \[8, 16\]\)"):
        tune(config(records, tune_dir, space_file, max_trials=1))


def test_default_batch_sizes_are_sized_to_the_data(tmp_path):
    assert load_space(None).ranges["training.batch_size"] == {"values": [64, 128, 256]}
    assert load_space(None, 200).ranges["training.batch_size"] == {"values": [64, 128]}
    assert "training.batch_size" not in load_space(None, 63).ranges  # the base recipe's batch then applies
    path = tmp_path / "space.yaml"
    path.write_text("training.batch_size: {values: [8, 128]}")
    with pytest.raises(InputError, match="128 exceed the 64 training records"):
        load_space(str(path), 64)


def test_stepped_floats_are_rounded(tmp_path):
    space = load_space(None)
    assert space.value("model.dropout", 0.1 * 3) == 0.3
    assert "model.dropout=0.3" in space.overrides({"model.dropout": 0.1 * 3})


def test_bad_spaces_and_strategies_are_one_line(tmp_path):
    cases = {
        "optimizer.learning_rate: {min: 0.1, max: 0.01}": "min < max",
        "optimizer.nope: {values: [1]}": "unknown key",
        "model.dropout: {values: [0.5, 1.5]}": "dropout",
        "model.dropout: {low: 0.1}": "give",
    }
    for text, message in cases.items():
        path = tmp_path / "space.yaml"
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            load_space(str(path))
    with pytest.raises(InputError, match="single worker"):
        TuneConfig("data", "tune", strategy="multi-worker")


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_that_trial(records, space_file, tmp_path):
    """kill -9 during trial 1 (after its first checkpoint): the re-run finishes trial 1 from that
    checkpoint, then runs trial 2; three trials in all."""
    tune_dir = tmp_path / "tune"
    overrides = (*TINY, "training.checkpoint_every_steps=2")
    args = [sys.executable, "-m", "alexnet_tf", "tune", "--data-dir", records, "--tune-dir", str(tune_dir),
            "--space", space_file, "--max-trials", "3", "--epochs", "2",
            *(arg for override in overrides for arg in ("--set", override))]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tune_dir / "search" / "trial_1" / "run" / "checkpoints" / "checkpoint"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (checkpoint.parent.parent / "history.csv").exists()  # killed mid-trial

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "trial 0:" not in again.stdout
    assert "trial 1:" in again.stdout and "resuming from epoch 0 step" in again.stdout
    table = again.stdout[again.stdout.index("trial  status") :].splitlines()[2:]
    assert [line.split()[:2] for line in table[:3]] == [["0", "COMPLETED"], ["1", "COMPLETED"], ["2", "COMPLETED"]]


@pytest.mark.slow
def test_sigterm_mid_trial_saves_the_trials_checkpoint_and_exits_143(records, space_file, tmp_path):
    """SIGTERM during a trial: its fit saves a checkpoint at the next step and says so; tune exits
    143 (SIGTERM), not 130, and adds no line of its own."""
    tune_dir = tmp_path / "tune"
    overrides = (*TINY, "training.checkpoint_every_steps=2")
    args = [sys.executable, "-m", "alexnet_tf", "tune", "--data-dir", records, "--tune-dir", str(tune_dir),
            "--space", space_file, "--max-trials", "1", "--epochs", "50",
            *(arg for override in overrides for arg in ("--set", override))]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    log = tmp_path / "stderr"
    with open(log, "w") as stderr:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    checkpoint = tune_dir / "search" / "trial_0" / "run" / "checkpoints" / "checkpoint"
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        status = process.wait(120)
    finally:
        process.kill()
    printed = log.read_text()
    assert status == 143 and "Traceback" not in printed, printed[-3000:]
    said = "terminated \\(SIGTERM\\): saved a checkpoint at step \\d+; re-run the same command to resume"
    assert re.fullmatch(said, printed.strip().splitlines()[-1]), printed[-3000:]
