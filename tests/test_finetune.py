"""Fine-tuning: ``fit --init-from`` (layers by name and shape, towers split from groups, a new
head), ``--freeze``, ``finetune.lr_multipliers`` (Caffe's ``lr_mult``), under one device and
two towers, with resume; bad input as one line.

Tiny models (test_train.py's recipe) on generated records: a 4-class source run, fine-tuned to 3 classes.
"""

import dataclasses
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import AlexNet
from alexnet_tf.errors import InputError
from alexnet_tf.recipe import OptimizerSection, load_recipe
from alexnet_tf.synthetic import write_synthetic_dataset
from alexnet_tf.training import init_from, optim
from alexnet_tf.training.fit import FitConfig, fit
from tests.test_train import ENV, TINY, fit_two_workers_and_one, mirror_invariant_records, run_cli
from tests.test_train_faults import assert_same_history, assert_same_weights, resume, start

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def tiny(*overrides: str):
    return load_recipe(None, [*TINY, "training.epochs=1", *overrides])


def kernels(network: keras.Model, name: str) -> np.ndarray:
    """``name``'s kernel as one layer: towers' output filters together (the grouped layout's)."""
    layers = [layer for layer in network.layers if layer.name in (name, f"{name}_tower0", f"{name}_tower1")]
    return np.concatenate([layer.kernel.numpy() for layer in layers], axis=-1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Source records (4 classes) and the new data (3 classes), 72×72."""
    root = tmp_path_factory.mktemp("data")
    source, new = str(root / "source"), str(root / "new")
    write_synthetic_dataset(source, num_classes=4, train_records=64, validation_records=16, image_size=72)
    write_synthetic_dataset(new, num_classes=3, train_records=64, validation_records=16, image_size=72, seed=1)
    return source, new


@pytest.fixture(scope="module")
def source_run(data, tmp_path_factory):
    """A finished run on the source records: what --init-from starts from."""
    run = str(tmp_path_factory.mktemp("source") / "run")
    fit(FitConfig(data[0], run, tiny(), verbose=False))
    return run


def test_init_from_loads_the_features_freezes_and_resumes(data, source_run, tmp_path, capsys):
    """conv1…conv5 come from the source and stay bit-for-bit (no update, no decay) through a
    resumed epoch; fc6/fc7 are loaded and train; fc8 (3 classes, the source's 4) is new."""
    source = keras.saving.load_model(os.path.join(source_run, "best.keras")).get_layer("alexnet")
    run = str(tmp_path / "run")
    recipe = tiny(f"finetune.init_from={source_run}", "finetune.freeze=conv5", "finetune.lr_multipliers={fc8: 10}")
    first = fit(FitConfig(data[1], run, recipe, verbose=False)).model.get_layer("alexnet")
    out = capsys.readouterr().out
    assert (
        f"initialised from {source_run}/best.keras: loaded conv1, conv2, conv3, conv4, conv5, fc6, fc7 " in out
        and "re-initialised fc8 (3 classes; the source has 4); skipped nothing" in out
    ), out
    for name in CONVS:
        np.testing.assert_array_equal(kernels(first, name), kernels(source, name))
    assert not np.array_equal(kernels(first, "fc6"), kernels(source, "fc6"))  # loaded, then trained
    assert first.get_layer("fc8").kernel.shape[-1] == 3
    fc6_after_one = kernels(first, "fc6")

    # Resume for a second epoch: the checkpoint (without optimizer slots for frozen layers) restores.
    two = dataclasses.replace(recipe, training=tiny("training.epochs=2").training)
    second = fit(FitConfig(data[1], run, two, allow_recipe_change=True, verbose=False)).model.get_layer("alexnet")
    out = capsys.readouterr().out
    assert "resuming from epoch 1" in out and "finetune.init_from is not read again" in out, out
    assert "initialised from" not in out
    for name in CONVS:
        np.testing.assert_array_equal(kernels(second, name), kernels(source, name))
    assert not np.array_equal(kernels(second, "fc6"), fc6_after_one)

    # Another source for the same run directory is a different recipe.
    other = tiny(f"finetune.init_from={run}", "finetune.freeze=conv5", "finetune.lr_multipliers={fc8: 10}")
    with pytest.raises(InputError, match="finetune.init_from"):
        fit(FitConfig(data[1], run, other, verbose=False))


@pytest.mark.slow
def test_kill_9_mid_epoch_of_a_fine_tuning_run_resumes_bit_identical(data, source_run, tmp_path):
    """Frozen layers, an lr multiplier and an --init-from source through kill -9 and resume:
    the run ends with the uninterrupted one's weights and history, bit for bit."""
    options = (f"finetune.init_from={source_run}", "finetune.freeze=conv3", "finetune.lr_multipliers={fc8: 10}",
               "training.checkpoint_every_steps=2")  # fmt: skip
    straight, run = str(tmp_path / "straight"), str(tmp_path / "run")
    resume(straight, data[1], *options)
    process = start(run, data[1], "checkpoint-6", *options)  # 4 steps per epoch: mid-way through epoch 2
    process.kill()
    process.wait()
    result = resume(run, data[1], *options)
    assert "resuming from epoch 1 step 6" in result.stdout and "not read again" in result.stdout, result.stdout
    assert_same_history(run, straight)
    assert_same_weights(os.path.join(run, "last.keras"), os.path.join(straight, "last.keras"))


def test_two_tower_strategy_splits_a_grouped_source_between_the_towers(data, tmp_path, capsys):
    """A source in Caffe's grouped layout (Conv2D(groups=2)) starts a two-tower run: tower t gets
    group t's filters; conv1 and conv2 frozen, so they still equal the source's after training."""
    grouped = AlexNet(num_classes=5, input_size=64, grouped_convolutions=True, channel_multiplier=0.125,
                      initialization="he", seed=3)  # fmt: skip
    path = str(tmp_path / "grouped.keras")
    grouped.save(path)
    recipe = tiny(f"finetune.init_from={path}", "finetune.freeze=conv2")
    network = fit(FitConfig(data[1], str(tmp_path / "run"), recipe, strategy="two-tower", devices=2, verbose=False))
    network = network.model.get_layer("alexnet")
    assert "re-initialised fc8 (3 classes; the source has 5)" in capsys.readouterr().out
    for name in ("conv1", "conv2"):
        half = grouped.get_layer(name).kernel.shape[-1] // 2
        for tower in (0, 1):
            layer = network.get_layer(f"{name}_tower{tower}")
            assert layer.kernel.value.device.endswith(f"CPU:{tower}")
            np.testing.assert_array_equal(
                layer.kernel.numpy(), grouped.get_layer(name).kernel.numpy()[..., tower * half : (tower + 1) * half]
            )


@pytest.mark.slow
def test_mirrored_strategy_fine_tunes_with_frozen_layers_and_a_new_head(data, source_run, tmp_path):
    """Data parallelism over two replicas: the loaded, frozen layers stay the source's (each
    replica's gradient is dropped for them alike) and the new head trains. In a process of its
    own: a second mirrored training in one process (test_train's) reuses collective instance keys."""
    source = keras.saving.load_model(os.path.join(source_run, "best.keras")).get_layer("alexnet")
    run = tmp_path / "run"
    options = [*TINY, "training.epochs=1", "finetune.lr_multipliers={fc8: 10}"]
    result = run_cli("--data-dir", data[1], "--model-dir", str(run), "--strategy", "mirrored", "--devices", "2",
                     "--init-from", source_run, "--freeze", "conv5", *[f"--set={o}" for o in options])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "over 2 replica(s) (mirrored)" in out and "re-initialised fc8 (3 classes; the source has 4)" in out, out
    network = keras.saving.load_model(run / "last.keras").get_layer("alexnet")
    for name in CONVS:
        np.testing.assert_array_equal(kernels(network, name), kernels(source, name))
    assert not np.array_equal(kernels(network, "fc6"), kernels(source, "fc6"))


def test_towers_to_towers_with_the_same_head_gives_the_same_outputs():
    source = AlexNet(num_classes=4, input_size=64, channel_multiplier=0.125, classifier_activation=None, seed=1)
    target = AlexNet(num_classes=4, input_size=64, channel_multiplier=0.125, classifier_activation=None, seed=2)
    line = init_from.initialize(target, init_from.Source("src.keras", source))
    assert "fc7, fc8 (" in line and "re-initialised nothing; skipped nothing" in line, line
    images = np.random.default_rng(0).uniform(-100, 100, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(target(images), source(images))


# Each architecture difference, and the recipe key the one-line refusal names.
MISFITS = [
    ({"channel_multiplier": 0.25}, "conv1 has 24 filters, the recipe's 12 (set model.channel_multiplier=0.25)"),
    ({"two_towers": False}, "one tower (set model.two_towers=false)"),
    ({"lrn_variant": "caffe"}, "LRN variant 'caffe' (set model.lrn_variant=caffe)"),
    ({"local_response_normalization": False}, "without LRN (set model.local_response_normalization=false)"),
    ({"pad_input": False, "input_size": 67}, "conv1 input not padded (set model.pad_input=false); 67x67 input"),
    ({"input_size": 72}, "72x72 input (set input.crop_size=72)"),
    ({"initialization": "paper"}, "no input_scale layer (set model.initialization=paper)"),
]


@pytest.mark.parametrize("change, message", MISFITS)
def test_a_source_that_does_not_fit_the_recipe_is_refused_naming_the_key(change, message):
    options = {"num_classes": 3, "input_size": 64, "channel_multiplier": 0.125, "initialization": "he", **change}
    with pytest.raises(InputError, match="does not fit the recipe") as error:
        init_from.check_fits("src.keras", AlexNet(**options), tiny())
    assert message in str(error.value) and "\n" not in str(error.value)


def test_lr_multiplier_scales_the_whole_update_by_hand():
    """Caffe's lr_mult: v ← μ·v − m·ε·(∂L/∂w + λ·w) for fc8's kernel (m = 10), bias without decay;
    fc7 (m = 1) and a frozen fc6 (no update at all) beside it."""
    section = OptimizerSection()
    lr, mu, wd, m = 0.05, section.momentum, section.weight_decay, 10.0
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="fc6"), keras.layers.Dense(2, name="fc8")])
    assert optim.freeze_layers(model, "fc6") == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"]
    fc6 = model.get_layer("fc6").kernel.numpy()
    assert [v.path for v in model.trainable_variables] == ["sequential/fc8/kernel", "sequential/fc8/bias"]
    optimizer = optim.make_optimizer(section, lr, mixed_float16=False)
    decayed = optim.decayed_variables(model, section)
    scales = optim.update_scales(model.trainable_variables, {"fc8": m, "fc7": 3.0})
    assert scales == [m, m]
    x = np.array([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0]], np.float32)
    y = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    h = model.get_layer("fc6")(x).numpy().astype(np.float64)
    w, b = (v.numpy().astype(np.float64) for v in model.trainable_variables)
    v_w, v_b = np.zeros_like(w), np.zeros_like(b)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.reduce_sum((model(x) - y) ** 2, axis=-1)) + optim.l2_loss(decayed, wd)
        grads = optim.scale_updates(tape.gradient(loss, model.trainable_variables), scales)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        error = h @ w + b - y
        grad_w, grad_b = 2 * h.T @ error / len(x), 2 * error.mean(axis=0)
        v_w = mu * v_w - m * lr * (grad_w + wd * w)
        v_b = mu * v_b - m * lr * grad_b
        w, b = w + v_w, b + v_b
        np.testing.assert_allclose(model.trainable_variables[0].numpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.trainable_variables[1].numpy(), b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.get_layer("fc6").kernel.numpy(), fc6)


@pytest.mark.parametrize(
    "override, message",
    [
        ("finetune.freeze=fc8", "finetune.freeze='fc8' is impossible; use null or one of conv1, "),
        ("finetune.lr_multipliers={conv9: 2}", "finetune.lr_multipliers={'conv9': 2} is impossible"),
        ("finetune.lr_multipliers={fc8: 0}", "use a mapping of conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8 to a"),
        ("finetune.lr_multipliers=10", "finetune.lr_multipliers=10: wrong type; expected a mapping such as {fc8: 10}"),
        ("finetune.lr_multipliers={fc8: x}", "finetune.lr_multipliers.fc8='x': wrong type; expected float"),
        ("model.lrn_variant=alex", "model.lrn_variant='alex' is impossible; use one of paper, caffe"),
    ],
)
def test_bad_finetune_keys_are_one_line(override, message):
    with pytest.raises(InputError) as error:
        load_recipe(None, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_cli_init_from_errors_are_one_line(data, source_run, tmp_path):
    def run(*args):
        command = [sys.executable, "-m", "alexnet_tf", "fit", "--data-dir", data[1], "--quiet"]
        return subprocess.run(command + [f"--set={o}" for o in TINY] + list(args), env=ENV, capture_output=True,
                              text=True)  # fmt: skip

    missing = run("--model-dir", str(tmp_path / "a"), "--init-from", str(tmp_path / "none.keras"))
    misfit = run("--model-dir", str(tmp_path / "b"), "--init-from", source_run, "--set=model.lrn_variant=caffe")
    for result, message in (
        (missing, "--init-from " + str(tmp_path / "none.keras") + ": not a .keras file or a run directory"),
        (misfit, "does not fit the recipe: LRN variant 'paper' (set model.lrn_variant=paper)"),
    ):
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")  # nothing written


@pytest.mark.slow
def test_multi_worker_fine_tuning_matches_one_worker(tmp_path):
    """Two worker processes fine-tune from one source with conv1-conv2 frozen and end with the
    weights of one worker given the whole global batch: each worker loaded the same source and the
    same new head (one that had not would move the averaged gradients elsewhere). The set-up of
    test_train's multi-worker test: every step sees the same images whoever reads them."""
    source_records, records = str(tmp_path / "source_records"), str(tmp_path / "records")
    write_synthetic_dataset(source_records, num_classes=3, train_records=8, validation_records=4, image_size=64)
    write_synthetic_dataset(records, num_classes=2, train_records=8, train_shards=4, validation_records=12,
                            validation_shards=3, image_size=64)  # fmt: skip
    mirror_invariant_records(records)
    options = [*TINY, "training.batch_size=8", "training.epochs=2", "input.crop_size=64", "input.mean=channel",
               "input.lighting_strength=0", "model.dropout=0"]  # fmt: skip
    source = str(tmp_path / "source_run")
    fit(FitConfig(source_records, source, load_recipe(None, [*options, "training.epochs=1"]), verbose=False))
    args = ["--data-dir", records, "--quiet", "--init-from", source, "--freeze", "conv2",
            *[f"--set={o}" for o in options]]  # fmt: skip
    chief = fit_two_workers_and_one(tmp_path, args)
    assert "over 2 replica(s) (multi-worker)" in chief and "re-initialised fc8 (2 classes; the source has 3)" in chief

    def network(run: str) -> keras.Model:
        return keras.saving.load_model(os.path.join(run, "last.keras")).get_layer("alexnet")

    before, multi, one = (
        network(source).weights,
        network(tmp_path / "multi").weights,
        network(tmp_path / "single").weights,
    )
    for initial, a, b in zip(before, multi, one, strict=True):
        if b.path.split("/")[0].split("_")[0] in ("conv1", "conv2"):  # frozen: the source's, bit for bit
            np.testing.assert_array_equal(a.numpy(), initial.numpy(), err_msg=a.path)
            np.testing.assert_array_equal(b.numpy(), initial.numpy(), err_msg=b.path)
        elif b.shape == initial.shape:  # loaded, then trained alike
            moved = np.linalg.norm(b.numpy() - initial.numpy())
            assert moved > 0, b.path
            assert np.linalg.norm(a.numpy() - b.numpy()) < 0.01 * moved, b.path
        else:  # fc8: the new head, seeded alike on every worker
            assert np.linalg.norm(a.numpy() - b.numpy()) < 0.01 * np.linalg.norm(b.numpy()), b.path
