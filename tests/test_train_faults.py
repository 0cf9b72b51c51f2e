"""`alexnet-tf fit` under faults: damaged checkpoints, kill -9 at chosen moments, Ctrl-C during
validation, a full disk, NaN before any checkpoint; and exact resume with dropout on.

The moments are made exact with fit's test hook (``ALEXNET_TF_TEST_PAUSE``, `alexnet_tf.training.fit`):
the process stops just after a named checkpoint or inside validation and waits on stdin, and the
test kills or interrupts it there. Runs that must end bit-identical use the deterministic input
mode and a fixed seed; dropout stays on (0.5).
"""

import os
import shutil
import signal
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.training.fit import FitConfig, fit
from alexnet_tf.training.loop import PAUSE_ENV, TrainingDiverged
from alexnet_tf.training.trainer import Trainer
from tests import test_train
from tests.test_train import ENV, TINY, read_history, run_cli, tiny

# 8 steps per epoch (128 records, batch 16); checkpoints at steps 4, 8 (epoch end), 12, 16 (final).
EXACT = [*TINY, "training.epochs=2", "training.checkpoint_every_steps=4", "input.deterministic=true",
         "model.dropout=0.5"]  # fmt: skip
records = test_train.records  # the same generated records (a module-scoped fixture)
HISTORY_KEYS = ("epoch", "lr", "loss", "top1", "top5", "val_loss", "val_top1", "val_top5")  # not images_per_sec


def checkpoint_files(run: str) -> list[str]:
    return sorted(os.listdir(os.path.join(run, "checkpoints")))


# --- A damaged checkpoint directory ------------------------------------------------------------


@pytest.fixture(scope="module")
def one_epoch(records, tmp_path_factory) -> str:
    """A finished 1-epoch run with checkpoints ckpt-4, ckpt-6 and ckpt-8 (the epoch's end)."""
    run = str(tmp_path_factory.mktemp("one_epoch") / "run")
    fit(FitConfig(records, run, tiny("training.epochs=1", "training.checkpoint_every_steps=2"), verbose=False))
    assert [name for name in checkpoint_files(run) if name.endswith(".index")] == [
        "ckpt-4.index",
        "ckpt-6.index",
        "ckpt-8.index",
    ]
    return run


def resume_copy(records: str, one_epoch: str, tmp_path, damage) -> tuple[str, object]:
    """A copy of the 1-epoch run, damaged by ``damage(checkpoints_dir)``, continued for a second epoch."""
    run = str(tmp_path / "run")
    shutil.copytree(one_epoch, run)
    damage(os.path.join(run, "checkpoints"))
    recipe = tiny("training.epochs=2", "training.checkpoint_every_steps=2")
    return run, fit(FitConfig(records, run, recipe, allow_recipe_change=True, verbose=False))


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbled {{ model_checkpoint_path", b'model_checkpoint_path: "ck'])
def test_an_empty_or_garbled_state_file_resumes_from_the_newest_checkpoint(
    records, one_epoch, tmp_path, capsys, content
):
    def garble(directory):
        with open(os.path.join(directory, "checkpoint"), "wb") as f:
            f.write(content)

    run, result = resume_copy(records, one_epoch, tmp_path, garble)
    assert result.resumed_from == (1, 8)  # not a restart from step 0 over the intact ckpt-*
    lines = [line for line in capsys.readouterr().out.splitlines() if "checkpoints/checkpoint" in line]
    assert len(lines) == 1 and "rebuilt" in lines[0] and "ckpt-8" in lines[0], lines
    # The rebuilt state file is a working one: the manager kept the newest 3 and deleted the older ones.
    assert [name for name in checkpoint_files(run) if name.endswith(".index")] == [
        "ckpt-12.index",
        "ckpt-14.index",
        "ckpt-16.index",
    ]
    assert tf.train.latest_checkpoint(os.path.join(run, "checkpoints")).endswith("ckpt-16")


@pytest.mark.parametrize("part", ["index", "data-00000-of-00001"])
def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(records, one_epoch, tmp_path, capsys, part):
    def truncate(directory):
        path = os.path.join(directory, f"ckpt-8.{part}")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])

    run, result = resume_copy(records, one_epoch, tmp_path, truncate)
    assert result.resumed_from == (0, 6)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "ckpt-8" in line]
    assert len(lines) == 1 and "moved aside" in lines[0] and "ckpt-6" in lines[0], out
    assert "--overwrite" not in out
    names = checkpoint_files(run)
    assert {"bad-ckpt-8.index", "bad-ckpt-8.data-00000-of-00001"} <= set(names), names
    assert [int(row["epoch"]) for row in read_history(run)] == [0, 1]


def test_no_intact_checkpoint_is_refused_in_one_line(records, one_epoch, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(one_epoch, run)
    for name in checkpoint_files(run):
        if name.startswith("ckpt-") and name.endswith(".index"):
            with open(os.path.join(run, "checkpoints", name), "wb") as f:
                f.write(b"\0" * 10)
    before = checkpoint_files(run)
    with pytest.raises(
        InputError, match=r"checkpoints: no checkpoint can be restored \(3 found; the newest, ckpt-8: "
    ) as error:
        fit(FitConfig(records, run, tiny("training.epochs=2"), allow_recipe_change=True, verbose=False))
    assert "\n" not in str(error.value)
    assert checkpoint_files(run) == before  # nothing moved, nothing written over


def test_a_checkpoint_without_progress_still_resumes(records, tmp_path, monkeypatch):
    """A checkpoint written before it carried `progress` (best epoch, the epoch's sums) restores."""
    run = str(tmp_path / "run")
    everything = Trainer.checkpoint_objects
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "checkpoint_objects", lambda self: {
            name: value for name, value in everything(self).items() if name != "progress"})  # fmt: skip
        fit(FitConfig(records, run, tiny("training.epochs=1"), verbose=False))
    names = tf.train.load_checkpoint(os.path.join(run, "checkpoints")).get_variable_to_shape_map()
    assert names and not any(name.startswith("progress/") for name in names)
    result = fit(FitConfig(records, run, tiny("training.epochs=2"), allow_recipe_change=True, verbose=False))
    assert result.resumed_from == (1, 8) and result.epochs == 2


def test_nan_before_any_checkpoint_does_not_claim_one_is_kept(records, tmp_path):
    with pytest.raises(TrainingDiverged) as error:
        fit(FitConfig(records, str(tmp_path / "run"), tiny("optimizer.learning_rate=1e9"), verbose=False))
    assert "no checkpoint was written yet" in str(error.value)
    assert "last good checkpoint" not in str(error.value)


# --- Kill -9, Ctrl-C and exact resume (subprocesses) -------------------------------------------


def start(run: str, records: str, pause: str, *overrides: str) -> subprocess.Popen:
    """fit in a subprocess that stops at ``pause`` (see `alexnet_tf.training.loop._pause_for_tests`)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tf", "fit", "--data-dir", records, "--model-dir", run, "--quiet",
         *[f"--set={o}" for o in [*EXACT, *overrides]]],
        env={**ENV, PAUSE_ENV: pause}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    watchdog = threading.Timer(300, process.kill)  # a test that never reaches its moment must not hang
    watchdog.start()
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.strip() == f"paused at {pause}":
            watchdog.cancel()
            return process
    watchdog.cancel()
    process.wait()
    raise AssertionError(f"fit ended (status {process.returncode}) before {pause}:\n{''.join(seen)[-3000:]}")


def resume(run: str, records: str, *overrides: str) -> subprocess.CompletedProcess:
    options = [f"--set={o}" for o in [*EXACT, *overrides]]
    result = run_cli("--data-dir", records, "--model-dir", run, "--quiet", *options)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def weights(path: str) -> list[np.ndarray]:
    return [w.numpy() for w in keras.saving.load_model(path, compile=False).weights]


def assert_same_weights(a: str, b: str) -> None:
    first, second = weights(a), weights(b)
    assert len(first) == len(second)
    different = [i for i, (x, y) in enumerate(zip(first, second, strict=True)) if not np.array_equal(x, y)]
    assert not different, f"{len(different)} of {len(first)} tensors differ between {a} and {b}"


def assert_same_history(run: str, reference: str) -> None:
    def rows(directory):
        return [{key: row[key] for key in HISTORY_KEYS} for row in read_history(directory)]

    assert rows(run) == rows(reference)


@pytest.fixture(scope="module")
def straight(records, tmp_path_factory) -> str:
    """The uninterrupted run every interrupted one must end identical to."""
    run = str(tmp_path_factory.mktemp("straight") / "run")
    resume(run, records)
    rows = read_history(run)
    # best.keras is then the final epoch's model: what a kill after the final checkpoint leaves stale.
    assert float(rows[-1]["val_top1"]) > max(float(row["val_top1"]) for row in rows[:-1]), rows
    return run


@pytest.mark.slow
def test_kill_9_mid_epoch_with_dropout_resumes_bit_identical(records, straight, tmp_path):
    run = str(tmp_path / "run")
    process = start(run, records, "checkpoint-12")  # mid-way through epoch 2
    process.kill()
    process.wait()
    assert len(read_history(run)) == 1
    result = resume(run, records)
    assert "resuming from epoch 1 step 12" in result.stdout
    assert_same_history(run, straight)  # the resumed epoch's row covers all of its 8 steps
    for name in ("last.keras", "best.keras"):
        assert_same_weights(os.path.join(run, name), os.path.join(straight, name))


@pytest.mark.slow
def test_kill_9_just_after_the_final_checkpoint_completes_the_models(records, straight, tmp_path):
    run = str(tmp_path / "run")
    process = start(run, records, "checkpoint-16")
    process.kill()
    process.wait()
    # The kill came before the final epoch's models were written: best.keras is epoch 1's, and
    # last.keras (due every `training.last_model_every_seconds`, 60) is not written yet, or is too.
    last = os.path.join(run, "last.keras")
    assert os.path.exists(os.path.join(run, "best.keras"))
    if os.path.exists(last):
        assert_same_weights(last, os.path.join(run, "best.keras"))
    # What a kill during a checkpoint's write leaves behind.
    os.makedirs(os.path.join(run, "checkpoints", "ckpt-20_temp"))
    result = resume(run, records)
    for name in ("last.keras", "best.keras"):
        assert_same_weights(os.path.join(run, name), os.path.join(straight, name))
    assert "wrote last.keras and best.keras from the checkpoint" in result.stdout, result.stdout
    assert not [name for name in checkpoint_files(run) if name.endswith("_temp")]
    assert_same_history(run, straight)


@pytest.mark.slow
def test_ctrl_c_during_validation_writes_no_zero_row(records, straight, tmp_path):
    run = str(tmp_path / "run")
    process = start(run, records, "validation-16")  # the final epoch's validation
    process.send_signal(signal.SIGINT)  # recorded; fit stops once the running batch is done
    process.communicate("\n", timeout=120)  # the pause ends: that batch is done
    assert process.returncode == 130
    assert len(read_history(run)) == 1
    resume(run, records)
    assert all(float(row["loss"]) > 0 and float(row["images_per_sec"]) > 0 for row in read_history(run))
    assert_same_history(run, straight)
    assert_same_weights(os.path.join(run, "last.keras"), os.path.join(straight, "last.keras"))


# --- A full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (needs root and a kernel that allows it; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: str) -> str:
    """Fills the file system of ``directory``; returns the filler's path."""
    path = os.path.join(directory, "filler")
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    return path


@pytest.mark.slow
def test_sigterm_on_a_full_disk_says_the_checkpoint_was_not_saved_and_which_one_is_kept(records, small_disk):
    run = os.path.join(small_disk, "run")
    process = start(run, records, "validation-8")  # ckpt-4 written; the epoch's end (step 8) not yet
    filler = fill(small_disk)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate("\n", timeout=300)
    assert process.returncode == 143, stderr
    line = [line for line in stderr.splitlines() if line.startswith("terminated (SIGTERM)")]
    assert len(line) == 1 and "could not save a checkpoint at step 8" in line[0], stderr
    assert "No space left on device" in line[0] and "ckpt-4, is kept" in line[0], stderr
    assert "Traceback" not in stderr, stderr
    os.remove(filler)
    assert "resuming from epoch 0 step 4" in resume(run, records).stdout


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(records, small_disk):
    run = os.path.join(small_disk, "run")
    every_2 = "training.checkpoint_every_steps=2"  # the next write after ckpt-2 is ckpt-4, mid-epoch
    process = start(run, records, "checkpoint-2", every_2)
    filler = fill(small_disk)
    _, stderr = process.communicate("\n", timeout=300)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == 1, stderr
    assert lines[-1].startswith("Error: cannot write") and "checkpoints" in lines[-1], stderr
    assert "No space left on device" in lines[-1] and "Traceback" not in stderr, stderr
    os.remove(filler)
    result = resume(run, records, every_2)
    assert "resuming from epoch 0 step 2" in result.stdout
    assert not [name for name in checkpoint_files(run) if name.endswith("_temp")]
