"""`alexnet-tf fit`: learning, the paper's update rule, resume after kill -9, strategies, faults.

Tiny models (channel_multiplier 0.125, 64×64 crops) on generated records. The mirrored and
two-tower tests use the two logical CPUs that conftest.py sets up for the whole session.
"""

import csv
import io
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import AlexNet
from alexnet_tf.errors import InputError
from alexnet_tf.figures.curves import write_curves
from alexnet_tf.recipe import OptimizerSection, ScheduleSection, load_recipe
from alexnet_tf.records import schema
from alexnet_tf.synthetic import write_synthetic_dataset
from alexnet_tf.training import optim
from alexnet_tf.training.dropout_seeds import use_step_seeds
from alexnet_tf.training.fit import FitConfig, fit
from alexnet_tf.training.loop import TrainingDiverged
from alexnet_tf.training.schedule import LearningRateSchedule
from tests.cluster import tf_configs

TINY = [
    "model.channel_multiplier=0.125",
    "model.initialization=he",
    "input.crop_size=64",
    "input.shuffle_buffer=256",
    "optimizer.learning_rate=0.01",
    "schedule.batch_scaling=none",
    "training.batch_size=16",
    "training.seed=0",
    "training.log_every_steps=2",
    "training.mixed_precision=none",  # not auto: the same numbers on every host
]
ENV = {
    **os.environ,
    "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """4 tinted classes, 128 training and 32 validation records of 72×72."""
    directory = str(tmp_path_factory.mktemp("records"))
    write_synthetic_dataset(
        directory, num_classes=4, train_records=128, train_shards=4, validation_records=32, image_size=72
    )
    return directory


def tiny(*overrides: str):
    return load_recipe(None, [*TINY, *overrides])


def run_cli(*args: str, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf", "fit", *args], env=env or ENV, capture_output=True, text=True, **kwargs
    )


def read_history(model_dir) -> list[dict]:
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


# --- Learning and the run directory ----------------------------------------------------------


def test_fit_learns_and_writes_the_run_directory(records, tmp_path):
    run = str(tmp_path / "run")
    result = fit(FitConfig(records, run, tiny("training.epochs=5"), verbose=False))
    losses = [row["loss"] for row in result.history]
    assert losses[1] < losses[0]  # one epoch lowers the loss
    # chance is 0.25; five epochs reached 0.59-0.84 in runs here (training is not bit-deterministic):
    # 16 of 32 validation images right happens by chance with p = 0.002
    assert result.best_val_top1 >= 0.5
    assert result.best_val_top1 == max(row["val_top1"] for row in result.history)
    assert [int(row["epoch"]) for row in read_history(run)] == [0, 1, 2, 3, 4]
    assert sorted(os.listdir(run)) == [
        "best.keras",
        "checkpoints",
        "classes.json",
        "history.csv",
        "last.keras",
        "recipe.yaml",
        "tensorboard",
    ]
    assert load_recipe(os.path.join(run, "recipe.yaml")) == tiny("training.epochs=5")
    # The saved model is on the pipeline's views: ViewNormalization (with the mean) first, softmax last.
    saved = keras.saving.load_model(os.path.join(run, "last.keras"), safe_mode=True)
    normalization = next(layer for layer in saved.layers if layer.name.startswith("view_normalization"))
    assert float(tf.reduce_mean(normalization.mean_values)) > 1.0
    views = {name: tf.zeros([2, *spec.shape[1:]], spec.dtype) for name, spec in saved.input.items()}
    np.testing.assert_allclose(np.sum(saved(views), axis=-1), 1.0, rtol=1e-5)
    events = os.listdir(os.path.join(run, "tensorboard"))
    assert events and all(name.startswith("events.out.tfevents") for name in events)
    tags = {
        value.tag
        for name in events
        for event in tf.compat.v1.train.summary_iterator(os.path.join(run, "tensorboard", name))
        for value in event.summary.value
    }
    assert {
        "train/loss",
        "learning_rate",
        "validation/top1",
        "epoch/images_per_sec",
        "conv1_filters",
        "train/inputs",
    } <= tags


def test_one_update_is_the_papers_rule_by_hand():
    """v ← 0.9·v − 0.0005·ε·w − ε·∂L/∂w; w ← w + v, for kernels; biases without the decay."""
    section = OptimizerSection()
    lr, mu, wd = 0.05, section.momentum, section.weight_decay
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, bias_initializer="ones", name="fc")])
    optimizer = optim.make_optimizer(section, lr, mixed_float16=False)
    decayed = optim.decayed_variables(model, section)
    assert [v.path.split("/")[-2:] for v in decayed] == [["fc", "kernel"]]
    x = np.array([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0]], np.float32)
    y = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    w, b = (v.numpy().astype(np.float64) for v in model.trainable_variables)
    v_w, v_b = np.zeros_like(w), np.zeros_like(b)
    for _ in range(2):  # the second step has a non-zero momentum
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.reduce_sum((model(x) - y) ** 2, axis=-1)) + optim.l2_loss(decayed, wd)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        # By hand: ∂L/∂W of the mean squared error (without the decay), then the paper's rule.
        error = x @ w + b - y
        grad_w, grad_b = 2 * x.T @ error / len(x), 2 * error.mean(axis=0)
        v_w = mu * v_w - wd * lr * w - lr * grad_w
        v_b = mu * v_b - lr * grad_b
        w, b = w + v_w, b + v_b
        np.testing.assert_allclose(model.trainable_variables[0].numpy(), w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(model.trainable_variables[1].numpy(), b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("every_steps, saved", [(1000, [16, 24]), (8, [8, 16, 24])])
def test_validate_every_epochs_validates_every_nth_and_the_last_epoch(records, tmp_path, capsys, every_steps, saved):
    """Also: an epoch's end checkpoints (and draws conv1 for TensorBoard) when it validated, else
    only when the step count is due (8 steps an epoch here)."""
    run = str(tmp_path / "run")
    recipe = tiny(
        "training.epochs=3", "training.validate_every_epochs=2", f"training.checkpoint_every_steps={every_steps}"
    )
    result = fit(FitConfig(records, run, recipe, verbose=True))
    indexes = [name for name in os.listdir(os.path.join(run, "checkpoints")) if name.endswith(".index")]
    assert sorted(int(name.removeprefix("ckpt-").removesuffix(".index")) for name in indexes) == saved
    events = [os.path.join(run, "tensorboard", name) for name in os.listdir(os.path.join(run, "tensorboard"))]
    conv1_steps = [
        event.step
        for path in events
        for event in tf.compat.v1.train.summary_iterator(path)
        if any(value.tag == "conv1_filters" for value in event.summary.value)
    ]
    assert sorted(conv1_steps) == saved  # conv1's image with the checkpoints
    val_top1 = [float(row["val_top1"]) for row in read_history(run)]
    assert [not math.isnan(value) for value in val_top1] == [False, True, True]  # epoch 2, and the last
    assert result.best_val_top1 == max(val_top1[1:])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ") and "loss" in line]
    assert len(lines) == 3 and "val_top1" not in lines[0] and all("val_top1" in line for line in lines[1:]), lines
    assert os.path.exists(os.path.join(run, "best.keras"))
    assert write_curves(run, str(tmp_path / "curves.png"))[0] > 0  # the plot leaves the epoch out


def test_the_plateau_schedule_counts_validations_not_epochs():
    section = ScheduleSection(policy="plateau", patience=1, min_delta=0.0, batch_scaling="none")
    schedule = LearningRateSchedule(section, 0.01)
    assert schedule.end_of_epoch(0, None) == 0.01  # not validated: nothing counted
    assert schedule.end_of_epoch(1, 0.5) == 0.01  # the first error: the best so far
    assert schedule.end_of_epoch(2, None) == 0.01
    assert int(schedule.epochs_without_improvement.numpy()) == 0
    assert schedule.end_of_epoch(3, 0.6) == pytest.approx(0.001)  # one validation without improvement


# --- Resume -----------------------------------------------------------------------------------

# Plateau with min_delta 0.9: every epoch after the first is "no improvement", so the lr history
# depends only on the plateau counters (patience 2, at most 2 reductions), which must survive a kill.
RESUME = [*TINY, "training.epochs=6", "training.checkpoint_every_steps=2", "schedule.patience=2",
          "schedule.min_delta=0.9", "schedule.max_reductions=2"]  # fmt: skip


@pytest.mark.slow
def test_kill_9_mid_epoch_resumes_with_the_uninterrupted_lr_history(records, tmp_path):
    args = ["--data-dir", records, "--quiet", *[f"--set={o}" for o in RESUME]]
    killed = str(tmp_path / "killed")
    process = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tf", "fit", "--model-dir", killed, *args], env=ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # Kill as soon as a checkpoint inside epoch 3 (steps 17-23 of 8 per epoch) exists.
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        latest = tf.train.latest_checkpoint(os.path.join(killed, "checkpoints"))
        if latest and 16 < int(latest.rsplit("-", 1)[1]) < 24:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    latest = tf.train.latest_checkpoint(os.path.join(killed, "checkpoints"))
    killed_at = int(latest.rsplit("-", 1)[1])
    assert 16 < killed_at < 32, latest
    rows_before = len(read_history(killed))

    resumed = run_cli("--model-dir", killed, *args)
    assert resumed.returncode == 0, resumed.stderr
    resumed_step = int(resumed.stdout.split("resuming from epoch ")[1].split(" step ")[1].split()[0])
    assert resumed_step >= killed_at and resumed_step % 8 != 0  # mid-epoch
    assert rows_before <= 3

    straight = run_cli("--model-dir", str(tmp_path / "straight"), *args)
    assert straight.returncode == 0, straight.stderr
    history, expected = read_history(killed), read_history(str(tmp_path / "straight"))
    assert [row["epoch"] for row in history] == [str(e) for e in range(6)]
    assert [row["lr"] for row in history] == [row["lr"] for row in expected]
    assert len({row["lr"] for row in expected}) == 3  # two reductions happened
    # The resumed run trained (epoch, step, momentum restored): it ends with the same total steps.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(killed, "checkpoints")))
    assert reader.get_tensor("state/step/.ATTRIBUTES/VARIABLE_VALUE") == 48
    assert reader.get_tensor("schedule/reductions/.ATTRIBUTES/VARIABLE_VALUE") == 2


def test_dropout_masks_are_a_function_of_seed_step_replica_and_layer():
    """Not of a counter that a checkpoint loses: the same (seed, step) gives the same masks again."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():  # as fit builds it: Keras' own seed counter would then be one for all replicas
        inputs = keras.Input((256,))
        model = keras.Model(inputs, keras.layers.Dropout(0.5)(keras.layers.Dropout(0.5)(inputs)))
        key = use_step_seeds(model)
    key.assign([7, 0])  # [seed, step]
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]

    # Compiled with XLA per replica, as fit's jit_compile does: each replica must read its own key.
    compiled = tf.function(lambda x: tuple(layer(x, training=True) for layer in layers), jit_compile=True)

    @tf.function
    def dropped():
        return strategy.run(lambda: compiled(tf.ones([1, 256])))  # the input on the replica's device

    def draw():  # {(layer, replica): mask}, traced once: the variables are read at every call
        results = [strategy.experimental_local_results(outputs) for outputs in dropped()]
        return {(i, r): t.numpy() != 0 for i, replicas in enumerate(results) for r, t in enumerate(replicas)}

    first = draw()
    assert len(first) == 4 and len({m.tobytes() for m in first.values()}) == 4  # each layer and replica its own
    again = draw()
    assert all(np.array_equal(first[where], again[where]) for where in first)
    for seed_and_step in ([7, 1], [8, 0]):
        key.assign(seed_and_step)
        assert not any(np.array_equal(first[where], mask) for where, mask in draw().items())


def test_a_different_recipe_or_optimizer_is_refused(records, tmp_path):
    run = str(tmp_path / "run")
    fit(FitConfig(records, run, tiny("training.epochs=1"), verbose=False))
    with pytest.raises(InputError, match=r"recipe.yaml: .*\(training.epochs: 1 -> 2\).*`allow_recipe_change=True`"):
        fit(FitConfig(records, run, tiny("training.epochs=2"), verbose=False))
    # mixed_float16 wraps the optimizer in a LossScaleOptimizer: restoring would drop the momentum.
    changed = tiny("training.epochs=2", "training.mixed_precision=mixed_float16")
    with pytest.raises(InputError, match=r"ckpt-8: the checkpoint does not match this run's model and optimizer"):
        fit(FitConfig(records, run, changed, allow_recipe_change=True, verbose=False))
    resumed = fit(FitConfig(records, run, tiny("training.epochs=2"), allow_recipe_change=True, verbose=False))
    assert resumed.resumed_from == (1, 8) and resumed.epochs == 2


def test_a_run_refused_before_training_writes_nothing_and_the_corrected_command_runs(records, tmp_path):
    """Issue 22: a batch larger than the data was refused after recipe.yaml was written, and the
    corrected command was then refused as "a different recipe"."""
    run = tmp_path / "run"
    with pytest.raises(InputError, match="128 training records are fewer than training.batch_size=256"):
        fit(FitConfig(records, str(run), tiny("training.batch_size=256", "training.epochs=1"), verbose=False))
    assert not run.exists() or not list(run.iterdir())
    result = fit(FitConfig(records, str(run), tiny("training.epochs=1"), verbose=False))
    assert result.epochs == 1 and result.resumed_from is None


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(records, tmp_path):
    run = str(tmp_path / "run")
    fit(FitConfig(records, run, tiny("training.epochs=1"), verbose=False))
    good = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    absurd = tiny("training.epochs=2", "optimizer.learning_rate=1e9")
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at step \d+ \(epoch 2\) with learning rate 1e\+09"):
        fit(FitConfig(records, run, absurd, allow_recipe_change=True, verbose=False))
    assert tf.train.latest_checkpoint(os.path.join(run, "checkpoints")) == good
    # Through the CLI: one Error line, status 1.
    options = [f"--set={o}" for o in TINY]
    cli = run_cli("--data-dir", records, "--model-dir", run, "--allow-recipe-change", "--quiet", *options,
                  "--epochs", "2", "--learning-rate", "1e9")  # fmt: skip
    assert cli.returncode == 1 and cli.stderr.strip().splitlines()[-1].startswith("Error: loss is")
    assert "Traceback" not in cli.stderr


# --- Strategies -------------------------------------------------------------------------------


@pytest.mark.slow
def test_this_file_imports_after_tensorflow_started_and_leaves_the_devices_alone():
    """No ordering between test files: importing this one after TensorFlow's runtime has started
    works and changes no device (the two logical CPUs come from conftest.py, once per session)."""
    probe = (
        "import tensorflow as tf\n"
        "tf.constant(0)  # starts the runtime: the devices are fixed from here on\n"
        "import tests.test_train\n"
        "print(len(tf.config.list_logical_devices('CPU')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1"]


def test_mirrored_on_two_logical_cpus(records, tmp_path, capsys):
    result = fit(FitConfig(records, str(tmp_path / "run"), tiny("training.epochs=1"), strategy="mirrored", devices=2))
    assert "over 2 replica(s) (mirrored)" in capsys.readouterr().out
    assert np.isfinite(result.history[0]["loss"])
    with pytest.raises(InputError, match="training.batch_size=15 does not divide over 2 replicas"):
        fit(FitConfig(records, str(tmp_path / "odd"), tiny("training.batch_size=15"), strategy="mirrored", devices=2))


def test_two_tower_places_each_tower_on_its_own_device(records, tmp_path):
    result = fit(FitConfig(records, str(tmp_path / "run"), tiny("training.epochs=1"), strategy="two-tower", devices=2,
                           verbose=False))  # fmt: skip
    network = result.model.get_layer("alexnet")
    for tower in (0, 1):
        for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
            for variable in network.get_layer(f"{layer}_tower{tower}").weights:
                assert variable.value.device.endswith(f"CPU:{tower}"), (variable.path, variable.value.device)
    assert network.get_layer("fc6").kernel.value.device.endswith("CPU:0")
    # The ops: trace the model and read the devices the graph asks for.
    graph = (
        tf.function(lambda x: network(x, training=True))
        .get_concrete_function(tf.TensorSpec([2, 64, 64, 3], tf.float32))
        .graph
    )
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert len(convs) == 10
    for op in convs:
        tower = 1 if "tower1" in op.name else 0
        assert op.device.endswith(f"CPU:{tower}"), (op.name, op.device)
    with pytest.raises(InputError, match="XLA ignores tf.device"):
        fit(FitConfig(records, str(tmp_path / "x"), tiny("training.jit_compile=true"), strategy="two-tower", devices=2))
    with pytest.raises(InputError, match="`fc_device='/CPU:1'` is for `strategy='two-tower'` only"):
        fit(FitConfig(records, str(tmp_path / "z"), tiny(), strategy="mirrored", devices=2, fc_device="/CPU:1"))
    with pytest.raises(InputError, match="needs model.two_towers=true"):
        fit(FitConfig(records, str(tmp_path / "y"), tiny("model.two_towers=false"), strategy="two-tower", devices=2))


def fit_two_workers_and_one(tmp_path, args: list[str]) -> str:
    """``fit ARGS`` by two worker processes into ``tmp_path/multi`` (each with its own TMPDIR,
    ``tmp_path/tmpN``) and by one process into ``tmp_path/single``, at the same time; asserts
    all succeeded and returns the chief's output."""
    workers = []
    for index, tf_config in enumerate(tf_configs(2)):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = {**ENV, "TF_CONFIG": tf_config, "TMPDIR": str(scratch)}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "alexnet_tf", "fit", "--strategy", "multi-worker", "--model-dir",
             str(tmp_path / "multi"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    single = run_cli("--model-dir", str(tmp_path / "single"), *args)
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    assert single.returncode == 0, single.stderr
    return outputs[0][0]


def mirror_invariant_records(directory: str) -> None:
    """Rewrites every record's image with each row set to its mean colour: constant along x, so
    the decoded image equals its mirror image exactly (JPEG rounding included; checked)."""
    for name in tf.io.gfile.listdir(directory):
        if not name.startswith(("train-", "validation-")):
            continue
        path = os.path.join(directory, name)
        examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
        with tf.io.TFRecordWriter(path) as writer:
            for example in examples:
                feature = example.features.feature[schema.ENCODED].bytes_list
                image = np.asarray(Image.open(io.BytesIO(feature.value[0])), np.float32)
                rows = np.broadcast_to(image.mean(axis=1, keepdims=True), image.shape).round().astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(rows).save(buffer, "JPEG", quality=95, subsampling=0)  # 4:4:4
                feature.value[0] = buffer.getvalue()
                decoded = tf.io.decode_jpeg(feature.value[0]).numpy()
                assert np.array_equal(decoded, decoded[:, ::-1])
                writer.write(example.SerializeToString())


@pytest.mark.slow
def test_multi_worker_matches_one_worker_with_the_same_global_batch(tmp_path):
    """Two worker processes (each half of the global batch) end with one worker's weights.

    The global batch is the whole training set, crops are the whole image, images are
    mirror-invariant, no lighting, no dropout: the data of every step is the same set of
    images whoever reads them, so only the summation order may differ.
    """
    records = str(tmp_path / "records")
    # 3 validation shards: worker 0 validates 8 images, worker 1 only 4 and then empty batches.
    write_synthetic_dataset(records, num_classes=2, train_records=8, train_shards=4, validation_records=12,
                            validation_shards=3, image_size=64)  # fmt: skip
    mirror_invariant_records(records)
    options = [*TINY, "training.batch_size=8", "training.epochs=3", "input.crop_size=64", "input.mean=channel",
               "input.lighting_strength=0", "model.dropout=0"]  # fmt: skip
    chief = fit_two_workers_and_one(tmp_path, ["--data-dir", records, "--quiet", *[f"--set={o}" for o in options]])
    assert "over 2 replica(s) (multi-worker)" in chief
    assert os.listdir(tmp_path / "tmp1") == []  # the other worker removed its temporary checkpoints
    multi = keras.saving.load_model(str(tmp_path / "multi" / "last.keras")).get_layer("alexnet")
    one = keras.saving.load_model(str(tmp_path / "single" / "last.keras")).get_layer("alexnet")
    # The same initial weights (seeded by training.seed=0), to measure how far training moved them.
    initial = AlexNet(2, 64, channel_multiplier=0.125, initialization="he", dropout=0.0, seed=0)
    for a, b, c in zip(multi.weights, one.weights, initial.weights, strict=True):
        moved = np.linalg.norm(b.numpy() - c.numpy())
        assert moved > 0, b.path
        assert np.linalg.norm(a.numpy() - b.numpy()) < 0.01 * moved, b.path
    for multi_row, one_row in zip(read_history(tmp_path / "multi"), read_history(tmp_path / "single"), strict=True):
        for key in ("loss", "val_loss"):
            assert float(multi_row[key]) == pytest.approx(float(one_row[key]), rel=1e-3), key


# --- Bad input through the CLI ------------------------------------------------------------------


@pytest.mark.slow
def test_cli_bad_input_is_one_error_line(records, tmp_path):
    cases = [
        (["--data-dir", str(tmp_path / "none"), "--model-dir", str(tmp_path / "a")], {}, "no such directory"),
        (["--data-dir", records, "--model-dir", str(tmp_path / "b"), "--set", "training.epochs=zero"], {},
         "training.epochs='zero': wrong type"),
        (["--data-dir", records, "--model-dir", str(tmp_path / "c"), "--strategy", "multi-worker"],
         {"TF_CONFIG": "{not json"}, "TF_CONFIG does not parse"),
    ]  # fmt: skip
    for args, extra, expected in cases:
        result = run_cli(*args, env={**ENV, **extra})
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and lines[-1].startswith("Error: ") and expected in lines[-1], result.stderr
        assert "Traceback" not in result.stderr


# Counts the functions autograph converts, in a fresh process (its cache is per process).
AUTOGRAPH_SCRIPT = """
import sys
from tensorflow.python.autograph.impl import api  # private: where every conversion happens
converted, convert = [], api._convert_actual
api._convert_actual = lambda f, context: converted.append(f"{f.__module__}.{f.__qualname__}") or convert(f, context)
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.recipe import load_recipe
from alexnet_tf.training.fit import FitConfig, fit
data, run, *overrides = sys.argv[1:]
fit(FitConfig(data, run, load_recipe(None, overrides), verbose=False))
lenient = InputPipeline(InputConfig(data, crop_size=64, skip_bad_records=True))
lenient.train_dataset(), lenient.eval_dataset(ten_crop=True)
print("converted:", converted)
"""


@pytest.mark.slow
def test_no_function_of_fit_or_its_input_goes_through_autograph(records, tmp_path):
    """fit's tf.functions and tf.data functions are written in TensorFlow ops (tf.cond, not
    Python ``if`` on tensors) and built with autograph off: its source transformation cost fit
    about 1.3 s of start-up and tracing (issue 18 §6). A new ``.map(lambda ...)`` without
    ``tf.autograph.experimental.do_not_convert`` shows up here."""
    overrides = [*TINY, "training.epochs=1", "training.steps_per_epoch=2"]
    result = subprocess.run(
        [sys.executable, "-c", AUTOGRAPH_SCRIPT, records, str(tmp_path / "run"), *overrides],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "converted: []", result.stdout


@pytest.mark.parametrize("every, writes", [(0, 3), (1e9, 1)])
def test_last_model_is_written_at_most_every_n_seconds_and_at_the_end(records, tmp_path, monkeypatch, every, writes):
    """§6 of issue 18: last.keras every epoch cost about a checkpoint's time per epoch; with
    ``training.last_model_every_seconds`` it is written when due and always after the last epoch
    (as a copy of best.keras when that epoch was the best). The run says where its time went."""
    from alexnet_tf import runs

    written = []
    save, copy = runs.save_model, runs.copy_model
    monkeypatch.setattr(runs, "save_model", lambda run, name, model: (written.append(name), save(run, name, model)))
    monkeypatch.setattr(runs, "copy_model", lambda run, source, name: (written.append(name), copy(run, source, name)))
    recipe = tiny("training.epochs=3", "training.steps_per_epoch=2", f"training.last_model_every_seconds={every}")
    result = fit(FitConfig(records, str(tmp_path / "run"), recipe, verbose=False))
    assert written.count("last.keras") == writes
    loaded = keras.saving.load_model(str(tmp_path / "run" / "last.keras"))
    for mine, theirs in zip(loaded.weights, result.model.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())  # the final epoch's model
    seconds = result.timings.seconds
    assert seconds["training steps"] > 0 and seconds["first step (tracing)"] > 0 and seconds["validation"] > 0
    assert 0 < result.timings.outside_steps() < 1
    assert result.timings.wall() == result.timings.wall()  # fit's, stopped at its return
    assert result.timings.describe().startswith("wall time ")
