"""The AlexNet model: shapes, parameter counts, towers, placement, initialisation, saving."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.network.layers import LocalResponseNormalization
from alexnet_tf.network.model import AlexNet, place_towers, tower_of

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny(**kwargs):
    """A small, fast copy: channel multiplier 1/8, 64×64 input, 10 classes."""
    kwargs = {"num_classes": 10, "input_size": 64, "channel_multiplier": 0.125, "seed": 0, **kwargs}
    return AlexNet(**kwargs)


def merged_channels(model, *names):
    """Output shape of layer ``name`` (towers' channels added up)."""
    shapes = [tuple(model.get_layer(n).output.shape[1:]) for n in names]
    return shapes[0][:-1] + (sum(s[-1] for s in shapes),)


@pytest.mark.slow
def test_full_size_shapes_and_parameters(full_model):
    towers = lambda name: (f"{name}_tower0", f"{name}_tower1")  # noqa: E731
    assert merged_channels(full_model, *towers("conv1")) == (55, 55, 96)
    assert merged_channels(full_model, *towers("conv2")) == (27, 27, 256)
    assert merged_channels(full_model, *towers("conv3")) == (13, 13, 384)
    assert merged_channels(full_model, *towers("conv4")) == (13, 13, 384)
    assert merged_channels(full_model, *towers("conv5")) == (13, 13, 256)
    assert merged_channels(full_model, "pool5") == (6, 6, 256)
    assert [full_model.get_layer(n).output.shape[1] for n in ("fc6", "fc7", "fc8")] == [4096, 4096, 1000]
    # Weights per layer as in the CSC321 table (K²·C·M per tower, summed), plus biases.
    expected = {
        "conv1": 11 * 11 * 3 * 48 * 2 + 96,
        "conv2": 5 * 5 * 48 * 128 * 2 + 256,
        "conv3": 3 * 3 * 256 * 192 * 2 + 384,
        "conv4": 3 * 3 * 192 * 192 * 2 + 384,
        "conv5": 3 * 3 * 192 * 128 * 2 + 256,
        "fc6": 6 * 6 * 256 * 4096 + 4096,
        "fc7": 4096 * 4096 + 4096,
        "fc8": 4096 * 1000 + 1000,
    }
    counted = {name: 0 for name in expected}
    for layer in full_model.layers:
        base = layer.name.split("_")[0]
        if base in counted:
            counted[base] += layer.count_params()
    assert counted == expected
    assert full_model.count_params() == 60_965_224 == 60_954_656 + 10_568


@pytest.mark.slow
def test_paper_initialisation(full_model):
    """§5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0."""
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for layer in full_model.layers:
        if not hasattr(layer, "kernel"):
            continue
        kernel = layer.kernel.numpy()
        assert abs(kernel.std() - 0.01) < 0.01 * 0.05, layer.name  # conv1's 17k entries: ~0.5% error
        assert abs(kernel.mean()) < 0.01 * 0.05, layer.name
        expected_bias = 1.0 if layer.name.split("_")[0] in ones else 0.0
        np.testing.assert_array_equal(layer.bias.numpy(), expected_bias, err_msg=layer.name)
    # Each layer draws its own weights (a shared seed must not repeat values across layers).
    k0 = full_model.get_layer("conv4_tower0").kernel.numpy()
    k1 = full_model.get_layer("conv4_tower1").kernel.numpy()
    assert not np.allclose(k0, k1)


def test_he_initialisation_is_a_named_deviation():
    """initialization="he": N(0, 2/fan_in) weights, fc8 N(0, 0.01), zero biases, inputs ÷ PIXEL_STDDEV."""
    from alexnet_tf.network.model import PIXEL_STDDEV

    model = AlexNet(10, 112, channel_multiplier=0.5, initialization="he", seed=0)
    assert model.get_layer("input_scale").scale == pytest.approx(1 / PIXEL_STDDEV)
    for layer in model.layers:
        if not hasattr(layer, "kernel"):
            continue
        kernel = layer.kernel.numpy()
        fan_in = np.prod(kernel.shape[:-1])
        expected = 0.01 if layer.name == "fc8" else np.sqrt(2 / fan_in)
        assert abs(kernel.std() / expected - 1) < 0.05, layer.name
        np.testing.assert_array_equal(layer.bias.numpy(), 0.0, err_msg=layer.name)
    assert AlexNet(10, 112, channel_multiplier=0.5, seed=0).count_params() == model.count_params()
    with pytest.raises(InputError, match="`initialization` must be one of paper, he"):
        AlexNet(initialization="xavier")


def test_variants_and_options():
    one = AlexNet(two_towers=False)
    # conv2, conv4, conv5 see all maps: 5·5·48·256 + 3·3·192·384 + 3·3·192·256 more weights.
    assert one.count_params() == 60_965_224 + 5 * 5 * 48 * 256 + 3 * 3 * 192 * 384 + 3 * 3 * 192 * 256
    assert not any("tower" in layer.name for layer in one.layers)

    grouped = AlexNet(grouped_convolutions=True)
    assert grouped.count_params() == 60_965_224
    assert [grouped.get_layer(n).groups for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [1, 2, 1, 2, 2]

    model = tiny(local_response_normalization=False, dropout=0.3, num_classes=7, input_size=(64, 80))
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in model.layers)
    assert [model.get_layer(n).rate for n in ("dropout6", "dropout7")] == [0.3, 0.3]
    assert model.output.shape == (None, 7)
    assert model.get_layer("conv1_tower0").filters == 6  # 96 · 1/8 / 2 towers
    assert model.get_layer("fc6").units == 512


def test_forward_and_every_parameter_gets_a_gradient():
    model = tiny()
    x = tf.random.normal((3, 64, 64, 3), stddev=50.0)
    probs = model(x, training=False)
    logits_model = tiny(classifier_activation=None)  # the same seed: the same weights
    # `predictions` is the softmax of fc8, and the outputs depend on the input image (only
    # slightly: with §5's N(0, 0.01) weights the signal nearly vanishes by fc8 - the plateau).
    np.testing.assert_allclose(probs, tf.nn.softmax(logits_model(x, training=False)), rtol=1e-5, atol=1e-7)
    assert not np.array_equal(probs[0], probs[1])
    with tf.GradientTape() as tape:
        logits = logits_model(x, training=True)
        labels = tf.constant([1, 2, 3])
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    grads = tape.gradient(loss, logits_model.trainable_variables)
    assert np.isfinite(loss.numpy())
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert all(np.any(g.numpy() != 0) for g in grads)


def _submodel_outputs(model, inputs: list[str], outputs: list[str], feeds):
    sub = keras.Model([model.get_layer(n).output for n in inputs], [model.get_layer(n).output for n in outputs])
    return [o.numpy() for o in sub(feeds)]


@pytest.mark.parametrize(
    "inputs, outputs",
    [
        (["pool1_tower0", "pool1_tower1"], ["conv2_tower0", "conv2_tower1"]),
        (["conv3_tower0", "conv3_tower1"], ["conv4_tower0", "conv4_tower1"]),
        (["conv4_tower0", "conv4_tower1"], ["conv5_tower0", "conv5_tower1"]),
    ],
)
def test_towers_are_independent_in_conv2_conv4_conv5(inputs, outputs):
    model = tiny(channel_multiplier=0.25)
    rng = np.random.default_rng(0)
    feeds = [rng.uniform(0, 5, size=(1, *model.get_layer(n).output.shape[1:])).astype(np.float32) for n in inputs]
    base = _submodel_outputs(model, inputs, outputs, feeds)
    for changed in (0, 1):
        perturbed = [
            f + (rng.uniform(1, 2, size=f.shape).astype(np.float32) if i == changed else 0) for i, f in enumerate(feeds)
        ]
        out = _submodel_outputs(model, inputs, outputs, perturbed)
        for tower in (0, 1):
            same = np.allclose(out[tower], base[tower])
            assert same == (tower != changed), f"{outputs[tower]} after changing {inputs[changed]}"


def test_conv3_sees_both_towers():
    model = tiny(channel_multiplier=0.25)
    inputs, outputs = ["pool2_tower0", "pool2_tower1"], ["conv3_tower0", "conv3_tower1"]
    rng = np.random.default_rng(1)
    feeds = [rng.uniform(0, 5, size=(1, *model.get_layer(n).output.shape[1:])).astype(np.float32) for n in inputs]
    base = _submodel_outputs(model, inputs, outputs, feeds)
    out = _submodel_outputs(model, inputs, outputs, [feeds[0], feeds[1] + 1.0])
    assert not np.allclose(out[0], base[0]) and not np.allclose(out[1], base[1])


def test_separate_towers_equal_grouped_convolutions():
    """Without LRN (whose window the grouped layout does not split), both layouts are one function."""
    towers = tiny(channel_multiplier=0.25, local_response_normalization=False)
    grouped = tiny(channel_multiplier=0.25, local_response_normalization=False, grouped_convolutions=True)
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        halves = [towers.get_layer(f"{name}_tower{t}") for t in (0, 1)]
        grouped.get_layer(name).set_weights(
            [np.concatenate([h.get_weights()[i] for h in halves], axis=-1) for i in (0, 1)]
        )
    for name in ("fc6", "fc7", "fc8"):
        grouped.get_layer(name).set_weights(towers.get_layer(name).get_weights())
    x = tf.random.normal((2, 64, 64, 3), stddev=50.0)
    np.testing.assert_allclose(grouped(x), towers(x), rtol=1e-4, atol=1e-6)


def test_keras_file_round_trip(tmp_path):
    model = tiny(tower_devices=["/CPU:0", "/CPU:0"])
    path = tmp_path / "alexnet.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    x = tf.random.normal((2, 64, 64, 3), stddev=50.0)
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))
    assert restored.get_layer("conv2_tower1").device == "/CPU:0"
    assert isinstance(restored.get_layer("lrn1_tower0"), LocalResponseNormalization)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_size": 63}, "input_size=63"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"channel_multiplier": 0}, "channel_multiplier=0"),
        ({"two_towers": False, "grouped_convolutions": True}, "grouped_convolutions"),
        ({"tower_devices": ["/CPU:0"]}, "tower_devices"),
        ({"grouped_convolutions": True, "tower_devices": ["/CPU:0", "/CPU:0"]}, "tower_devices"),
    ],
)
def test_invalid_options_are_named(kwargs, message):
    with pytest.raises(InputError, match=message):
        tiny(**kwargs)


_PLACEMENT_SCRIPT = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from alexnet_tf.network.model import AlexNet, place_towers, placed_devices
model = AlexNet(num_classes=10, input_size=64, channel_multiplier=0.125, tower_devices=["/CPU:0", "/CPU:1"])
images = tf.random.stateless_normal([2, 64, 64, 3], seed=[1, 2], stddev=50.0)

def placement(model):
    step = tf.function(lambda x: model(x, training=True))
    step(images)  # it runs across both devices
    graph = step.get_concrete_function(tf.TensorSpec([2, 64, 64, 3])).graph
    return {
        "variables": {v.path: v.value.device for v in model.weights},
        "ops": [[op.name, op.type, op.device] for op in graph.get_operations()],
    }

swapped = place_towers(model, ["/CPU:1", "/CPU:0"])
unplaced = place_towers(model, None)
print(json.dumps({
    "built": placement(model),
    "swapped": placement(swapped),
    "unplaced_devices": sorted(placed_devices(unplaced)),
    "swapped_difference": float(tf.reduce_max(tf.abs(swapped(images) - model(images)))),
    "unplaced_difference": float(tf.reduce_max(tf.abs(unplaced(images) - model(images)))),
}))
"""


@pytest.mark.slow
def test_tower_placement_on_two_logical_devices():
    # Logical devices must be configured before TensorFlow initialises: a fresh process.
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _PLACEMENT_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # As built, tower t on CPU:t; `place_towers` with the devices swapped moves ops and variables.
    for key, device_of_tower in (("built", {"0": "CPU:0", "1": "CPU:1"}), ("swapped", {"0": "CPU:1", "1": "CPU:0"})):
        placed = report[key]
        compute = {"Conv2D", "BiasAdd", "Relu", "LRN", "MaxPool"}
        tower_ops = [(name, device) for name, kind, device in placed["ops"] if kind in compute and "_tower" in name]
        assert {op_type for _, op_type, _ in placed["ops"] if op_type in compute} == compute
        assert len(tower_ops) >= 2 * 5 * 3  # conv1-5 (conv, bias, relu) per tower, plus LRN and pools
        for name, device in tower_ops:
            assert device.endswith(device_of_tower[name.split("_tower")[1][0]]), (key, name, device)
        tower_variables = {path: device for path, device in placed["variables"].items() if "_tower" in path}
        assert len(tower_variables) == 2 * 5 * 2
        for path, device in tower_variables.items():
            assert device.endswith(device_of_tower[path.split("_tower")[1][0]]), (key, path, device)
    assert report["unplaced_devices"] == []
    assert report["swapped_difference"] < 1e-5 and report["unplaced_difference"] < 1e-5


def test_towers_of_layer_names_and_placing_a_network_without_towers():
    names = ("conv1_tower0", "lrn2_tower1", "fc6", "pool5", "_tower1")
    assert [tower_of(name) for name in names] == [0, 1, None, None, None]
    with pytest.raises(InputError, match="0 separate towers, 2 tower devices"):
        place_towers(tiny(two_towers=False), ["/CPU:0", "/CPU:1"])
    with pytest.raises(InputError, match="0 separate towers, 2 tower devices"):
        place_towers(tiny(grouped_convolutions=True), ["/CPU:0", "/CPU:1"])


def test_mixed_bfloat16_computes_in_bfloat16_and_predicts_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = tiny()
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.get_layer("conv1_tower0").compute_dtype == "bfloat16"
    assert model.get_layer("lrn1_tower0").compute_dtype == "bfloat16"
    assert model.get_layer("fc8").kernel.dtype == "float32"  # variables stay float32
    x = tf.random.normal((2, 64, 64, 3), stddev=50.0, seed=1)
    probs = model(x, training=False)
    assert probs.dtype == tf.float32
    # Same weights (same seed) in float32: bfloat16's 8-bit mantissa moves probabilities a little.
    np.testing.assert_allclose(probs, tiny()(x, training=False), atol=0.03)


def test_keras_files_saved_before_the_modules_moved_still_load(tmp_path):
    """Issue 18 moved `alexnet_tf.layers` to `alexnet_tf.network.layers`: a ``.keras`` file whose
    config names the old module paths (as files saved by 0.1 do) loads, because the custom
    layers are looked up by their registered name."""
    import zipfile

    from alexnet_tf.network.layers import FLIP, IMAGE, LIGHTING, OFFSET, ViewNormalization, with_view_normalization

    model = with_view_normalization(
        AlexNet(num_classes=3, input_size=67, channel_multiplier=0.125), ViewNormalization(image_size=80)
    )
    new, old = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(new)
    with zipfile.ZipFile(new) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                text = data.decode()
                assert "alexnet_tf.network.layers" in text
                data = text.replace("alexnet_tf.network.layers", "alexnet_tf.layers").encode()
                assert "alexnet_tf.network" not in repr(json.loads(data))
            target.writestr(item, data)
    loaded = keras.saving.load_model(old, safe_mode=True)
    views = {IMAGE: np.full([1, 67, 67, 3], 128, np.uint8), OFFSET: np.zeros([1, 2], np.int32),
             FLIP: np.zeros([1], bool), LIGHTING: np.zeros([1, 3], np.float32)}  # fmt: skip
    np.testing.assert_allclose(loaded(views), model(views), rtol=1e-6)
