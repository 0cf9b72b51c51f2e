"""import-weights: Caffe's AlexNet (``.caffemodel``, current and legacy layouts; caffe-tensorflow's
``.npy``) and our own runs as run directories, compared with Caffe's forward pass in NumPy.

The nets are written by tests/caffe_files.py from random weights through Caffe's wire format;
tests/caffe_forward.py is Caffe's forward pass. Most nets are AlexNet at a quarter of its width
(``channel_multiplier=0.25``, the importer reads the width from conv1); one test imports the
real shapes (61 M parameters).
"""

import io
import os
import pickle
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from alexnet_tf import AlexNet, runs, synthetic
from alexnet_tf.classes import load_classes
from alexnet_tf.cli import main
from alexnet_tf.constants import CAFFE_CROP_SIZE
from alexnet_tf.errors import InputError
from alexnet_tf.evaluate import EvaluateConfig, evaluate
from alexnet_tf.input import augment
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.network.layers import LocalResponseNormalization, ViewNormalization, network_of, with_view_normalization
from alexnet_tf.pretrained import caffe, convert, npy, synsets
from alexnet_tf.pretrained.import_weights import import_weights
from alexnet_tf.serving.export import export_model
from tests import caffe_files, caffe_forward

QUARTER = 0.25
ILSVRC_CLASSES = 1000


# --- helpers ----------------------------------------------------------------------------------


def random_images(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 256, 256, 3), dtype=np.uint8)


def centre_views(images: np.ndarray) -> dict[str, np.ndarray]:
    """The evaluation views of 256×256 images for a 227 model: the crop at (14, 14)."""
    margin = (256 - CAFFE_CROP_SIZE) // 2
    crops = images[:, margin : margin + CAFFE_CROP_SIZE, margin : margin + CAFFE_CROP_SIZE]
    count = len(images)
    return {
        "image": crops,
        "offset": np.full((count, 2), margin, np.int32),
        "flip": np.zeros(count, bool),
        "lighting": np.zeros((count, 3), np.float32),
    }


def outputs(model: keras.Model, views: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """fc8's logits and the softmax of a model on views."""
    network = network_of(model)
    normalization = next(layer for layer in model.layers if isinstance(layer, ViewNormalization))
    logits = keras.Model(network.input, network.get_layer("fc8").output)(normalization(views))
    return np.asarray(logits), np.asarray(model(views))


def caffe_outputs(weights: dict, views: dict[str, np.ndarray], mean_bgr, lrn_groups: int = 1) -> np.ndarray:
    mean = np.asarray(mean_bgr, np.float64)
    return np.stack([caffe_forward.forward(weights, crop, mean, lrn_groups=lrn_groups) for crop in views["image"]])


def assert_matches_caffe(model: keras.Model, weights: dict, mean_bgr, lrn_groups: int = 1, images: int = 2) -> None:
    """The model's logits within 1e-4 of Caffe's (relative to their scale), its softmax within 1e-4."""
    views = centre_views(random_images(images))
    logits, probabilities = outputs(model, views)
    expected = caffe_outputs(weights, views, mean_bgr, lrn_groups)
    scale = np.abs(expected).max()
    assert 1.0 < scale < 100.0  # logits of a few units: the softmax is not saturated
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(probabilities, caffe_forward.softmax(expected), rtol=0, atol=1e-4)


def mean_image(seed: int = 3) -> np.ndarray:
    """A BGR mean image [3, 256, 256] that varies across the image (a window at the wrong offset shows)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-30, 30, 256, dtype=np.float32)
    return (np.array([104.0, 117.0, 123.0], np.float32)[:, None, None] + ramp[None, :, None] + ramp[None, None, :] / 2
            + rng.normal(0, 5, (3, 256, 256)).astype(np.float32))  # fmt: skip


@pytest.fixture(scope="module")
def quarter():
    return caffe_files.random_weights(QUARTER, ILSVRC_CLASSES, seed=0)


@pytest.fixture(scope="module")
def quarter_caffemodel(quarter, tmp_path_factory):
    return str(caffe_files.write_caffemodel(tmp_path_factory.mktemp("caffe") / "net.caffemodel", quarter))


def nothing_written(model_dir) -> bool:
    return not os.path.exists(model_dir) or not any(name in runs.RUN_FILES for name in os.listdir(model_dir))


# --- the named options: Caffe's LRN, Caffe's 227 input ----------------------------------------


def test_caffe_lrn_variant_is_caffes_formula():
    x = np.abs(np.random.default_rng(0).normal(0, 80, (2, 3, 4, 10))).astype(np.float32)
    layer = LocalResponseNormalization(k=1.0, variant="caffe")
    expected = caffe_forward.lrn(x.transpose(3, 0, 1, 2).reshape(10, 6, 4), 5, 1e-4, 0.75)
    expected = expected.reshape(10, 2, 3, 4).transpose(1, 2, 3, 0)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5)
    # The paper's formula (alpha not divided by n) is visibly another function here.
    assert not np.allclose(LocalResponseNormalization(k=1.0)(x), expected, rtol=1e-2)
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.variant, clone.k) == ("caffe", 1.0)
    with pytest.raises(InputError, match="variant='cuda'"):
        LocalResponseNormalization(variant="cuda")


def test_caffe_input_option_takes_227_unpadded_and_is_kept_in_the_saved_model(tmp_path):
    model = AlexNet(
        10, input_size=CAFFE_CROP_SIZE, pad_input=False, lrn_variant="caffe", channel_multiplier=0.125, seed=0
    )
    assert model.get_layer("conv1_tower0").output.shape[1:3] == (55, 55)
    assert model.get_layer("pool5").output.shape[1:3] == (6, 6)
    path = tmp_path / "caffe.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert restored.get_layer("conv1_pad").get_config()["padding"] == ((0, 0), (0, 0))
    assert restored.get_layer("lrn2_tower1").get_config()["variant"] == "caffe"
    assert restored.get_layer("lrn2_tower1").k == 1.0
    assert restored.input_shape[1] == CAFFE_CROP_SIZE
    # Evaluation cuts views at the model's input size: the centre 227 of 256 starts at 14.
    np.testing.assert_array_equal(augment.center_offset(256, CAFFE_CROP_SIZE), [14, 14])
    # The paper's model pads 224 to the same 55×55 maps; the option changes nothing by default.
    assert AlexNet(10, channel_multiplier=0.125).get_layer("conv1_pad").get_config()["padding"] == ((1, 2), (1, 2))
    with pytest.raises(InputError, match="lrn_variant"):
        AlexNet(10, lrn_variant="torch")


# --- each conversion, on its own ----------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(quarter, quarter_caffemodel):
    layers = caffe.read_net(quarter_caffemodel)
    networks = {}
    for layout in convert.LAYOUTS:
        networks[layout] = convert.build_network(quarter_caffemodel, layers, layout)
        convert.check_layers(quarter_caffemodel, layers, networks[layout])
        convert.set_weights(quarter_caffemodel, layers, networks[layout])
    return networks


def test_convolution_kernels_become_keras_layout(quarter, converted):
    caffe_kernel, caffe_bias = quarter["conv3"]  # (out, in, kh, kw), group 1
    kernel, bias = converted["grouped"].get_layer("conv3").get_weights()
    assert kernel.shape == (3, 3, caffe_kernel.shape[1], caffe_kernel.shape[0])
    for o, c, i, j in [(0, 0, 0, 0), (5, 17, 2, 1), (caffe_kernel.shape[0] - 1, caffe_kernel.shape[1] - 1, 1, 2)]:
        assert kernel[i, j, c, o] == caffe_kernel[o, c, i, j]
    np.testing.assert_array_equal(bias, caffe_bias)


@pytest.mark.parametrize("name", ["conv2", "conv4", "conv5"])
def test_group_halves_become_the_two_towers_and_the_grouped_layer(quarter, converted, name):
    caffe_kernel, caffe_bias = quarter[name]  # (out, in / 2, kh, kw), group 2
    half = caffe_kernel.shape[0] // 2
    for tower in (0, 1):
        kernel, bias = converted["towers"].get_layer(f"{name}_tower{tower}").get_weights()
        filters = slice(tower * half, (tower + 1) * half)
        np.testing.assert_array_equal(kernel, caffe_kernel[filters].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(bias, caffe_bias[filters])
    grouped = converted["grouped"].get_layer(name)
    assert grouped.groups == 2
    np.testing.assert_array_equal(grouped.get_weights()[0], caffe_kernel.transpose(2, 3, 1, 0))


def test_fc6_rows_go_from_channel_major_to_height_width_channel(quarter, converted):
    caffe_weights, _ = quarter["fc6"]  # (out, C·H·W)
    kernel = converted["grouped"].get_layer("fc6").get_weights()[0]  # (H·W·C, out)
    channels = quarter["conv5"][0].shape[0]
    for h, w, c in [(0, 0, 0), (0, 1, 0), (2, 5, 7), (5, 5, channels - 1)]:
        np.testing.assert_array_equal(kernel[(h * 6 + w) * channels + c], caffe_weights[:, (c * 6 + h) * 6 + w])


def test_bgr_input_is_folded_into_conv1(quarter, converted):
    caffe_kernel = quarter["conv1"][0]  # input channels B, G, R
    half = caffe_kernel.shape[0] // 2
    for layout, parts in (("grouped", [("conv1", slice(None))]), ("towers", [("conv1_tower1", slice(half, None))])):
        for layer_name, filters in parts:
            kernel = converted[layout].get_layer(layer_name).get_weights()[0]  # (kh, kw, R G B, out)
            for ours, theirs in ((0, 2), (1, 1), (2, 0)):
                np.testing.assert_array_equal(kernel[:, :, ours], caffe_kernel[filters, theirs].transpose(1, 2, 0))


def test_caffe_means_become_rgb_view_normalization(tmp_path):
    default = convert.view_normalization(None)
    assert default.mean == "channel"
    np.testing.assert_array_equal(default.mean_values.numpy(), [123.0, 117.0, 104.0])
    bgr = mean_image()
    for path in (caffe_files.write_binaryproto(tmp_path / "mean.binaryproto", bgr), tmp_path / "mean.npy"):
        if path.suffix == ".npy":
            np.save(path, bgr)
        layer = convert.view_normalization(caffe.read_mean(str(path)))
        assert (layer.mean, layer.image_size) == ("image", 256)
        np.testing.assert_array_equal(layer.mean_values.numpy(), bgr.transpose(1, 2, 0)[..., ::-1])


# --- whole nets against Caffe's forward pass ----------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["current-layout", "legacy-layout"])
def test_caffemodel_import_computes_caffes_outputs(quarter, tmp_path, legacy):
    source = caffe_files.write_caffemodel(tmp_path / "net.caffemodel", quarter, legacy=legacy)
    mean = None if legacy else caffe_files.write_binaryproto(tmp_path / "imagenet_mean.binaryproto", mean_image())
    run = tmp_path / "run"
    report = import_weights(str(source), str(run), mean=None if mean is None else str(mean))
    assert (report.source_format, report.layout, report.input_size) == ("caffemodel", "grouped", 227)
    path, model = runs.load_model(str(run))
    assert path.endswith("last.keras")
    assert_matches_caffe(model, quarter, convert.CAFFE_BGR_MEAN if legacy else mean_image())
    classes = load_classes(str(run), num_classes=ILSVRC_CLASSES)
    assert (classes[0].wnid, classes[0].name) == ("n01440764", "tench, Tinca tinca")


def test_towers_layout_is_caffes_net_with_lrn_inside_each_tower(quarter, quarter_caffemodel, tmp_path):
    """The towers hold exactly Caffe's groups (outputs equal Caffe's with LRN split in two); they
    are not Caffe's numbers, because Caffe's LRN window crosses the group boundary."""
    import_weights(quarter_caffemodel, str(tmp_path / "run"), layout="towers")
    _, model = runs.load_model(str(tmp_path / "run"))
    assert network_of(model).get_layer("conv2_tower1").filters == quarter["conv2"][0].shape[0] // 2
    assert_matches_caffe(model, quarter, convert.CAFFE_BGR_MEAN, lrn_groups=2)
    views = centre_views(random_images(1))
    logits, _ = outputs(model, views)
    caffes = caffe_outputs(quarter, views, convert.CAFFE_BGR_MEAN)
    assert np.abs(logits - caffes).max() > 1e-2 * np.abs(caffes).max()


@pytest.mark.parametrize("form, protocol", [("list", None), ("dict", None), ("list", 2)], ids=["list", "dict", "py2"])
def test_caffe_tensorflow_npy_import_computes_caffes_outputs(quarter, tmp_path, form, protocol):
    source = caffe_files.write_tensorflow_npy(tmp_path / "bvlc_alexnet.npy", quarter, form=form, protocol=protocol)
    np.save(tmp_path / "ilsvrc_2012_mean.npy", mean_image())
    report = import_weights(str(source), str(tmp_path / "run"), mean=str(tmp_path / "ilsvrc_2012_mean.npy"))
    assert report.source_format == "npy"
    _, model = runs.load_model(str(tmp_path / "run"))
    assert_matches_caffe(model, quarter, mean_image())


@pytest.mark.slow
def test_real_bvlc_alexnet_shapes(tmp_path):
    """bvlc_alexnet's own shapes (61 M parameters) in its file's legacy layout."""
    weights = caffe_files.random_weights(1.0, ILSVRC_CLASSES, seed=5)
    assert weights["conv2"][0].shape == (256, 48, 5, 5) and weights["fc6"][0].shape == (4096, 9216)
    source = caffe_files.write_caffemodel(tmp_path / "bvlc_alexnet.caffemodel", weights, legacy=True)
    report = import_weights(str(source), str(tmp_path / "run"))
    assert report.parameters == 60_965_224
    _, model = runs.load_model(str(tmp_path / "run"))
    assert_matches_caffe(model, weights, convert.CAFFE_BGR_MEAN, images=1)


# --- the run directory: evaluate, export, predict -----------------------------------------------


@pytest.fixture(scope="module")
def five_class_run(tmp_path_factory):
    """A 5-class Caffe net imported with the classes of a 5-class dataset, and that dataset."""
    root = tmp_path_factory.mktemp("five")
    records = str(root / "records")
    synthetic.write_synthetic_dataset(
        records, num_classes=5, train_records=5, train_shards=1, validation_records=6, validation_shards=1
    )
    weights = caffe_files.random_weights(QUARTER, 5, seed=7)
    source = caffe_files.write_caffemodel(root / "five.caffemodel", weights)
    run = str(root / "run")
    import_weights(str(source), run, classes=os.path.join(records, "metadata.json"))
    return records, run, weights


def test_evaluate_scores_an_imported_run_on_227_centre_crops(five_class_run):
    records, run, weights = five_class_run
    report = evaluate(EvaluateConfig(records, (run,), progress=False))
    pipeline = InputPipeline(InputConfig(records, crop_size=CAFFE_CROP_SIZE, normalize_in_model=True))
    expected, labels = [], []
    for views, batch_labels in pipeline.eval_dataset():
        assert views["image"].shape[1:] == (227, 227, 3) and np.all(views["offset"].numpy() == 14)
        expected.append(caffe_outputs(weights, {"image": views["image"].numpy()}, convert.CAFFE_BGR_MEAN))
        labels.append(batch_labels.numpy())
    expected, labels = np.concatenate(expected), np.concatenate(labels)
    np.testing.assert_array_equal(report.labels, labels)
    np.testing.assert_array_equal(report.predictions[run], expected.argmax(axis=1))
    assert report.models[0].top1_accuracy == pytest.approx(np.mean(expected.argmax(axis=1) == labels))


def test_export_and_predict_serve_an_imported_run_with_class_names(five_class_run, tmp_path):
    records, run, weights = five_class_run
    image = random_images(1, seed=9)[0]
    png = tmp_path / "photo.png"
    Image.fromarray(image).save(png)  # lossless and 256×256: the serving graph sees these pixels
    expected = caffe_forward.softmax(caffe_outputs(weights, centre_views(image[None]), convert.CAFFE_BGR_MEAN))[0]
    names = [c.name for c in load_classes(records)]
    version = export_model(run, str(tmp_path / "export"), top_k=2)
    served = tf.saved_model.load(version).signatures["serving_default"](image_bytes=tf.constant([png.read_bytes()]))
    np.testing.assert_allclose(served["probabilities"].numpy()[0], expected, atol=1e-4)
    assert served["top_k_names"].numpy()[0][0].decode() == names[int(expected.argmax())]
    for model in (run, str(tmp_path / "export")):
        result = CliRunner().invoke(main, ["predict", model, str(png), "--top-k", "1"])
        assert result.exit_code == 0, result.output
        assert names[int(expected.argmax())] in result.output


def test_cli_import_of_bvlc_layout_then_predict_prints_imagenet_names(quarter_caffemodel, quarter, tmp_path):
    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, ["import-weights", quarter_caffemodel, "--model-dir", run])
    assert result.exit_code == 0, result.output
    assert "imported caffemodel" in result.output and "1000 classes" in result.output
    assert "sha1" in result.output and "model zoo" not in result.output  # not the real file
    image = random_images(1, seed=4)[0]
    Image.fromarray(image).save(tmp_path / "photo.png")
    expected = caffe_outputs(quarter, centre_views(image[None]), convert.CAFFE_BGR_MEAN)[0].argmax()
    top = synsets.ilsvrc2012_classes()[int(expected)]
    result = CliRunner().invoke(main, ["predict", run, str(tmp_path / "photo.png"), "--top-k", "1"])
    assert result.exit_code == 0, result.output
    assert f"{top.wnid}  {top.name}" in result.output


# --- our own sources, classes, overwrite --------------------------------------------------------


def test_our_run_directory_and_keras_file_import_as_they_are(quarter_caffemodel, tmp_path):
    first = str(tmp_path / "first")
    import_weights(quarter_caffemodel, first)
    _, original = runs.load_model(first)
    views = centre_views(random_images(1))
    for i, source in enumerate((first, os.path.join(first, "last.keras"))):
        copy = str(tmp_path / f"copy{i}")
        report = import_weights(source, copy)
        assert report.source_format == "keras"
        _, model = runs.load_model(copy)
        np.testing.assert_array_equal(model(views), original(views))
        assert load_classes(copy) == load_classes(first)
    with pytest.raises(InputError, match="`mean` applies to Caffe sources"):
        import_weights(first, str(tmp_path / "with-mean"), mean="mean.binaryproto")
    bare = tmp_path / "bare" / "bare.keras"
    bare.parent.mkdir()
    AlexNet(5, input_size=64, channel_multiplier=0.125).save(bare)
    with pytest.raises(InputError, match="without its ViewNormalization"):
        import_weights(str(bare), str(tmp_path / "from-bare"))


def test_classes_from_synset_words_or_classes_json(tmp_path):
    ilsvrc = synsets.ilsvrc2012_classes()
    wnids = [c.wnid for c in ilsvrc]
    assert len(set(wnids)) == ILSVRC_CLASSES and wnids == sorted(wnids)
    assert (ilsvrc[-1].wnid, ilsvrc[-1].name) == ("n15075141", "toilet tissue, toilet paper, bathroom tissue")
    words = tmp_path / "synset_words.txt"
    words.write_text("n01 first class\nn02 second, class\nn03\n")
    assert [(c.wnid, c.name) for c in synsets.read_classes(str(words), 3)] == [
        ("n01", "first class"),
        ("n02", "second, class"),
        ("n03", "n03"),
    ]
    with pytest.raises(InputError, match="lists 3 classes .* 5 outputs"):
        synsets.read_classes(str(words), 5)
    with pytest.raises(InputError, match="not ImageNet's 1000; pass `classes`"):
        synsets.read_classes(None, 5)
    runs.write_classes(str(tmp_path), synsets.read_classes(str(words), 3))
    assert synsets.read_classes(str(tmp_path / "classes.json"), 3)[1].name == "second, class"


def test_an_existing_run_is_replaced_only_with_overwrite(quarter_caffemodel, tmp_path):
    run = tmp_path / "run"
    import_weights(quarter_caffemodel, str(run))
    (run / "history.csv").write_text("epoch\n")
    before = (run / "last.keras").stat().st_mtime_ns
    with pytest.raises(InputError, match="holds a run already .*`overwrite=True`"):
        import_weights(quarter_caffemodel, str(run))
    assert (run / "last.keras").stat().st_mtime_ns == before
    import_weights(quarter_caffemodel, str(run), overwrite=True)
    assert sorted(os.listdir(run)) == ["classes.json", "last.keras"]


# --- refusals -------------------------------------------------------------------------------


def _with(quarter, **changes) -> dict:
    return {**quarter, **changes}


def _layers_replaced(old: str, new: tuple) -> list:
    return [new if entry[0] == old else entry for entry in caffe_files.ALEXNET]


def _bad_sources(quarter, tmp_path) -> list[tuple[str, bytes | None, str]]:
    """(file name, content, fragment of the one-line error)."""
    good = caffe_files.net_bytes(quarter)
    caffenet = [entry for entry in caffe_files.ALEXNET if entry[0] != "norm1"]
    caffenet.insert(4, ("norm1", "LRN", (5, 1e-4, 0.75)))  # conv1, relu1, pool1, norm1: CaffeNet's order
    evil = io.BytesIO()
    np.lib.format.write_array_header_1_0(evil, {"descr": "|O", "fortran_order": False, "shape": ()})
    marker = tmp_path / "executed"
    evil.write(pickle.dumps(_Evil(str(marker))))
    wide = _with(quarter, fc7=(np.zeros((1024, 1000), np.float32), quarter["fc7"][1]))
    return [
        ("garbage.caffemodel", np.random.default_rng(0).bytes(5000), "not a Caffe net"),
        ("truncated.caffemodel", good[: len(good) // 2], "not a Caffe net"),
        ("deploy.prototxt", b'name: "AlexNet"\nlayer {\n  name: "conv1"\n}\n', "a text file"),
        ("empty.caffemodel", b"", "not a Caffe net with weights"),
        ("snapshot.caffemodel.h5", b"\x89HDF\r\n\x1a\n" + bytes(100), "an HDF5 snapshot"),
        ("mean.binaryproto", caffe_files.blob(mean_image()[None], legacy=True), "a mean image .binaryproto goes"),
        ("v0.caffemodel", caffe_files.field_bytes(2, caffe_files.field_bytes(1, b"")) + good, "V0 layout"),
        ("caffenet.caffemodel", caffe_files.net_bytes(quarter, layers=caffenet), "CaffeNet pools before"),
        (
            "alpha.caffemodel",
            caffe_files.net_bytes(quarter, layers=_layers_replaced("norm2", ("norm2", "LRN", (5, 1e-3, 0.75)))),
            "'norm2' (LRN) has alpha 0.001",
        ),
        (
            "group.caffemodel",
            caffe_files.net_bytes(
                quarter, layers=_layers_replaced("conv4", ("conv4", "Convolution", (384, 3, 1, 1, 1)))
            ),
            "'conv4' (Convolution) has group 1; AlexNet's conv4 has 2",
        ),
        (
            "fc7.caffemodel",
            caffe_files.net_bytes(wide),
            "'fc7' (InnerProduct) has weights (1024, 1000); AlexNet's fc7 needs (1024, 1024)",
        ),
        (
            "short.caffemodel",
            caffe_files.net_bytes(quarter, layers=caffe_files.ALEXNET[:-1]),
            "ends after layer 'relu7' (ReLU); AlexNet goes on with fc8",
        ),
        (
            "concat.caffemodel",
            caffe_files.net_bytes(
                quarter, layers=[*caffe_files.ALEXNET[:4], ("cat", "Concat", None), *caffe_files.ALEXNET[4:]]
            ),
            "layer 'cat' (Concat) where AlexNet has conv2",
        ),
        ("plain.npy", _npy_bytes(np.zeros(3)), "a NumPy array of float64"),
        ("evil.npy", evil.getvalue(), "refused to unpickle it (it refers to posix.system"),
        ("nofc8.npy", _npy_bytes({"conv1": [np.zeros(1), np.zeros(1)]}), "no layer 'conv2' (layers: conv1)"),
        ("missing.caffemodel", None, "no such file"),
    ]


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _npy_bytes(value) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(value, dtype=object) if isinstance(value, dict) else value, allow_pickle=True)
    return buffer.getvalue()


def test_bad_sources_are_refused_in_one_line_and_write_nothing(quarter, tmp_path):
    for name, content, fragment in _bad_sources(quarter, tmp_path):
        source = tmp_path / name
        if content is not None:
            source.write_bytes(content)
        run = tmp_path / f"run-{name}"
        with pytest.raises(InputError) as raised:
            import_weights(str(source), str(run))
        message = str(raised.value)
        assert fragment in message and str(source) in message, (name, message)
        assert "\n" not in message
        assert nothing_written(run), name
    assert not (tmp_path / "executed").exists()  # the pickle's code never ran


def test_bad_means_and_class_lists_are_refused(quarter_caffemodel, tmp_path):
    cases = [
        ("mean.npy", lambda p: np.save(p, np.zeros((3, 200, 200), np.float32)), {}, "a mean image of 200×200"),
        ("mean2.npy", lambda p: np.save(p, np.zeros((2, 5), np.float32)), {}, "a mean of shape (2, 5)"),
        ("mean.binaryproto", lambda p: p.write_bytes(b"\xff" * 40), {}, "not a Caffe BlobProto"),
        ("words.txt", lambda p: p.write_text("n01 one\nn02 two\n"), {"classes": True}, "lists 2 classes"),
    ]
    for name, write, options, fragment in cases:
        path = tmp_path / name
        write(path)
        run = tmp_path / f"run-{name}"
        kwargs = {"classes": str(path)} if options else {"mean": str(path)}
        with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            import_weights(quarter_caffemodel, str(run), **kwargs)
        assert nothing_written(run), name


def test_command_line_refusal_is_one_line_with_status_1(tmp_path):
    source = tmp_path / "garbage.caffemodel"
    source.write_bytes(np.random.default_rng(0).bytes(5000))
    result = CliRunner().invoke(main, ["import-weights", str(source), "--model-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "not a Caffe net" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kill_9_while_writing_the_model_leaves_no_model_and_the_same_command_finishes(tmp_path):
    """A real kill -9 of the command while it writes RUN/last.keras: no model under its final name;
    the same command run again (no --overwrite; here in-process) completes the import."""
    weights = caffe_files.random_weights(QUARTER, ILSVRC_CLASSES, seed=2)
    source = caffe_files.write_caffemodel(tmp_path / "net.caffemodel", weights, legacy=True)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "alexnet_tf", "import-weights", str(source), "--model-dir", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and not (run.is_dir() and any(n.startswith(".tmp-") for n in os.listdir(run))):
            time.sleep(0.002)
        assert process.poll() is None, "the import finished before it could be killed mid-write"
        process.kill()
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (run / "last.keras").exists()
    again = CliRunner().invoke(main, command[3:])  # the same command, in this process
    assert again.exit_code == 0, again.output
    assert sorted(os.listdir(run)) == ["classes.json", "last.keras"]  # the temporary is gone
    _, model = runs.load_model(str(run))
    assert model.count_params() == network_of(model).count_params() + 3  # the network and its mean


def test_layout_choices_of_the_command_are_the_importers():
    command = main.commands["import-weights"]
    option = next(param for param in command.params if param.name == "layout")
    assert tuple(option.type.choices) == convert.LAYOUTS


def test_npy_reader_takes_only_conv_and_fc_layers_in_caffe_layout(quarter, tmp_path):
    source = caffe_files.write_tensorflow_npy(tmp_path / "x.npy", quarter)
    layers = npy.read_npy(str(source))
    assert [layer.name for layer in layers] == [*npy.CONV_LAYERS, *npy.FC_LAYERS]
    for layer in layers:
        for ours, theirs in zip(layer.blobs, quarter[layer.name], strict=True):
            np.testing.assert_array_equal(ours, theirs)
    with_model = with_view_normalization(convert.build_network(str(source), layers), convert.view_normalization(None))
    assert isinstance(with_model.input, dict)
