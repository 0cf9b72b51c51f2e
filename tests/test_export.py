"""``alexnet-tf export`` and ``predict``: what TF Serving would load, checked without a server.

There is no TF Serving here (no docker engine), so a SavedModel is judged by `saved_model_cli`
and by `tf.saved_model.load` in a fresh process (`tests/serving_checks.py`), against the Keras
model and the input pipeline's own evaluation views. Tiny models (3 classes, width 0.125).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2

from alexnet_tf import AlexNet, runs
from alexnet_tf.classes import CLASSES_FILENAME, load_classes
from alexnet_tf.cli import main
from alexnet_tf.constants import DEFAULT_MAX_PIXELS
from alexnet_tf.errors import InputError
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.network.layers import ViewNormalization, with_view_normalization
from alexnet_tf.network.model import place_towers
from alexnet_tf.serving import export, image_headers
from alexnet_tf.serving import serving_model as serving
from alexnet_tf.serving.predict import open_classifier
from alexnet_tf.synthetic import write_synthetic_dataset
from tests.hostile_images import uniform_gif

REPO = pathlib.Path(__file__).resolve().parents[1]
SAVED_MODEL_CLI = str(pathlib.Path(sys.executable).parent / "saved_model_cli")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
NUM_CLASSES = 3
# Training device pins that must not reach the export (soft placement builds them on a CPU host).
TOWER_DEVICES = ["/GPU:0", "/GPU:1"]

pytestmark = pytest.mark.slow


def tiny_network(num_classes: int = NUM_CLASSES, **options) -> keras.Model:
    return AlexNet(num_classes, channel_multiplier=0.125, seed=3, **options)


def make_run(
    directory: pathlib.Path, *, policy: str = "float32", logits: bool = False, num_classes: int = NUM_CLASSES
) -> pathlib.Path:
    """A run directory as `fit` leaves it: ``best.keras`` (the model on views) and ``classes.json``."""
    directory.mkdir(parents=True)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        network = tiny_network(
            num_classes, tower_devices=TOWER_DEVICES, classifier_activation=None if logits else "softmax"
        )
        normalization = ViewNormalization("image", 256, dtype=policy)
    finally:
        keras.config.set_dtype_policy(previous)
    normalization.set_mean(np.random.default_rng(0).uniform(60, 200, (256, 256, 3)))
    # The paper's init (N(0, 0.01), biases 1) gives an untrained network the same output for every
    # image, which would let any comparison pass. He-normal kernels, zero biases and a small fc8
    # give a softmax that depends on the image and is far from saturated.
    rng = np.random.default_rng(3)
    for layer in network.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            kernel = rng.normal(0, np.sqrt(2 / np.prod(kernel.shape[:-1])), kernel.shape) / (
                20 if layer.name == "fc8" else 1
            )
            layer.set_weights([kernel, np.zeros_like(bias)])
    with_view_normalization(network, normalization).save(str(directory / runs.BEST_MODEL))
    classes = [{"index": i, "wnid": f"n{i:08d}", "name": f"class {i}"} for i in range(num_classes)]
    (directory / CLASSES_FILENAME).write_text(json.dumps({"classes": classes}))
    return directory


def photo(seed: int, width: int, height: int) -> np.ndarray:
    """A smooth random RGB image (JPEG-friendly, unlike pure noise)."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def run_dir(workdir) -> pathlib.Path:
    return make_run(workdir / "run")


@pytest.fixture(scope="module")
def images(workdir) -> dict[str, pathlib.Path]:
    """A JPEG, a PNG, a grayscale PNG and a grayscale JPEG of odd sizes, and a text file."""
    folder = workdir / "images"
    folder.mkdir()
    paths = {
        "jpeg": folder / "photo.jpg",
        "png": folder / "photo.png",
        "gray_png": folder / "gray.png",
        "gray_jpeg": folder / "gray.jpg",
        "text": folder / "notes.jpg",
    }
    Image.fromarray(photo(1, 333, 250)).save(paths["jpeg"], quality=90)
    Image.fromarray(photo(2, 240, 300)).save(paths["png"])
    Image.fromarray(photo(3, 300, 280)).convert("L").save(paths["gray_png"])
    Image.fromarray(photo(4, 280, 260)).convert("L").save(paths["gray_jpeg"], quality=90)
    paths["text"].write_text("not an image\n")
    return paths


@pytest.fixture(scope="module")
def base(workdir, run_dir) -> pathlib.Path:
    """An export base path with version 1 (centre view, top 2) and version 2 (ten views)."""
    path = workdir / "serving"
    assert export.export_model(str(run_dir), str(path), top_k=2) == str(path / "1")
    assert export.export_model(str(run_dir), str(path), ten_crop=True, top_k=2) == str(path / "2")
    return path


def write_records(path: pathlib.Path, image_size: int | None) -> pathlib.Path:
    write_synthetic_dataset(
        str(path), num_classes=NUM_CLASSES, train_records=3, train_shards=1, validation_records=4,
        validation_shards=1, image_size=image_size,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def records(workdir) -> pathlib.Path:
    """Validation records of varied geometry (kept as is, so §2 runs at evaluation too)."""
    return write_records(workdir / "records", None)


@pytest.fixture(scope="module")
def square_records(workdir) -> pathlib.Path:
    """Validation records of 256×256 images, prepare-data's default."""
    return write_records(workdir / "square_records", 256)


def check(*arguments: str) -> dict:
    """Runs a `tests/serving_checks.py` command in a fresh process; its JSON result."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.serving_checks", *arguments],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Layout and signatures --------------------------------------------------------------------


def test_layout_is_what_tf_serving_loads(base):
    version = base / "1"
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert (version / "saved_model.pb").is_file() and (version / "variables" / "variables.index").is_file()
    assert sorted(p.name for p in (version / "assets").iterdir()) == [serving.NAMES_ASSET, serving.WNIDS_ASSET]
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    saved_model = saved_model_pb2.SavedModel.FromString((version / "saved_model.pb").read_bytes())
    (graph,) = saved_model.meta_graphs
    assert list(graph.meta_info_def.tags) == ["serve"]
    signatures = {name: set(s.outputs) for name, s in graph.signature_def.items() if not name.startswith("__")}
    assert signatures == dict.fromkeys(["serving_default", "image_tensor", "tf_example"], set(serving.OUTPUT_KEYS))


def test_saved_model_cli_lists_the_three_signatures(base):
    shown = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", str(base / "1"), "--all"],
        env=ENV, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    blocks = {}
    for block in shown.split("signature_def['")[1:]:
        blocks[block.split("'")[0]] = " ".join(block.split())
    assert {"serving_default", "image_tensor", "tf_example"} <= set(blocks)

    def has(signature: str, kind: str, key: str, dtype: str, shape: str) -> bool:
        section = blocks[signature].split("The given SavedModel SignatureDef contains the following output(s):")
        text = section[0] if kind == "input" else section[1]
        return f"['{key}'] tensor_info: dtype: {dtype} shape: {shape}" in text

    assert has("serving_default", "input", "image_bytes", "DT_STRING", "(-1)")
    assert has("image_tensor", "input", "images", "DT_FLOAT", "(-1, 224, 224, 3)")
    assert has("tf_example", "input", "examples", "DT_STRING", "(-1)")
    for signature in ("serving_default", "image_tensor", "tf_example"):
        assert has(signature, "output", "probabilities", "DT_FLOAT", f"(-1, {NUM_CLASSES})")
        assert has(signature, "output", "top_k_indices", "DT_INT32", "(-1, 2)")
        assert has(signature, "output", "top_k_probabilities", "DT_FLOAT", "(-1, 2)")
        assert has(signature, "output", "top_k_wnids", "DT_STRING", "(-1, 2)")
        assert has(signature, "output", "top_k_names", "DT_STRING", "(-1, 2)")


def test_saved_model_cli_runs_a_jpeg(base, images, workdir):
    batch = workdir / "jpeg_batch.npy"
    np.save(batch, np.array([images["jpeg"].read_bytes()], dtype=object), allow_pickle=True)
    result = subprocess.run(
        [SAVED_MODEL_CLI, "run", "--dir", str(base / "1"),
         "--tag_set", "serve", "--signature_def", "serving_default", "--inputs", f"image_bytes={batch}"],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "top_k_names" in result.stdout and "b'class " in result.stdout


# --- Serving equals evaluation ----------------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(run_dir, base, records, square_records, images) -> dict:
    files = [str(images[kind]) for kind in ("jpeg", "png", "gray_png", "gray_jpeg")]
    model = str(run_dir / runs.BEST_MODEL)
    return check("compare", model, str(base / "1"), str(base / "2"), str(records), str(square_records), *files)


@pytest.mark.parametrize("kind", ["centre", "ten"])
@pytest.mark.parametrize("signature", ["serving_default", "tf_example"])
def test_serving_equals_the_evaluation_pipeline_on_records(comparison, kind, signature):
    result = comparison[f"records/{kind}/{signature}"]
    assert result["shape"] == [4, NUM_CLASSES] and result["dtype"] == "float32"
    assert result["max_abs"] < 1e-5, result
    assert comparison[f"records/{kind}/top_k"]
    assert comparison[f"records/{kind}/spread"] > 0.05  # the images do get different answers


@pytest.mark.parametrize("kind", ["centre", "ten"])
@pytest.mark.parametrize("signature", ["serving_default", "tf_example"])
def test_serving_and_evaluation_on_256_pixel_records(comparison, kind, signature):
    """Equal for the ten views; the centre view within 1e-3 (2.3e-4 measured).

    The pipeline's centre view of a 256×256 record decodes only the window
    (``decode_and_crop_jpeg``), whose edge columns differ by a few levels from the full decode
    that serving (and the pipeline's ten views) use; see `RecordDecoder.decode_window`.
    """
    result = comparison[f"square_records/{kind}/{signature}"]
    assert result["max_abs"] < (1e-5 if kind == "ten" else 1e-3), result
    assert comparison[f"square_records/{kind}/spread"] > 0.05


@pytest.mark.parametrize("kind", ["centre", "ten"])
@pytest.mark.parametrize("image", ["jpeg", "png", "gray_png", "gray_jpeg"])
def test_serving_equals_keras_with_evaluation_views_on_files(comparison, images, kind, image):
    result = comparison[f"{images[image]}/{kind}"]
    assert result["shape"] == [1, NUM_CLASSES] and result["max_abs"] < 1e-5, result


def test_image_tensor_signature_takes_the_prepared_view(comparison, images):
    assert comparison[f"{images['png']}/image_tensor"]["max_abs"] < 1e-5


def test_the_outputs_depend_on_the_image(run_dir, images, tmp_path):
    """Guards the comparisons above: the tiny model must not give every image the same answer."""
    with tempfile.TemporaryDirectory() as assets:
        model = export.load_serving_model(str(run_dir), assets)
        outputs = model.classify_image_bytes(tf.constant([images["jpeg"].read_bytes(), images["png"].read_bytes()]))
    probabilities = outputs[serving.PROBABILITIES].numpy()
    assert np.abs(probabilities[0] - probabilities[1]).max() > 0.05 and probabilities.max() < 0.99


def test_a_bad_image_fails_the_request_with_a_readable_message(base, images):
    result = check("bad-batch", str(base / "1"), str(images["jpeg"]))
    assert result["not_an_image"]["error"] == "InvalidArgumentError"
    assert "image 1 of the request is not a JPEG, PNG, GIF or BMP image" in result["not_an_image"]["message"]
    assert result["truncated"]["error"] == "InvalidArgumentError"
    assert "Invalid JPEG data" in result["truncated"]["message"]


def test_image_tensor_refuses_views_of_another_shape(base):
    """Issue 17 item 10: the declared ``[None, 224, 224, 3]`` is enforced in the graph."""
    result = check("wrong-shapes", str(base / "1"))
    assert result[str([2, 224, 224, 3])] == {"error": None, "batch": 2}
    for shape in ([1, 96, 96, 3], [9, 96, 96, 3], [1, 113, 112, 3], [1, 224, 224, 4]):
        outcome = result[str(shape)]
        assert outcome["error"] == "InvalidArgumentError", (shape, outcome)
        given = ",".join(map(str, shape))
        assert f"[{given}] is not compatible with expected shape [?,224,224,3]" in outcome["message"]


def test_cmyk_jpeg_decodes_to_rgb_close_to_pillow():
    rgb = photo(5, 300, 256)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, format="JPEG", quality=95)
    with Image.open(io.BytesIO(buffer.getvalue())) as cmyk:
        assert cmyk.mode == "CMYK"
        pillow = np.asarray(cmyk.convert("RGB")).astype(int)
    square = serving.decode_square(tf.constant(buffer.getvalue()), 256).numpy().astype(int)
    # decode_square resized 300x256 to the central 256x256; compare the same window of Pillow's.
    assert square.shape == (256, 256, 3)
    assert np.abs(square - pillow[:, 22:278]).mean() < 4.0


# --- Hostile images (issue 17 item 9) ------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(workdir) -> dict[str, pathlib.Path]:
    """Small files that once cost gigabytes: a 1×60000 PNG (fine, if only the central square is
    resampled), a 30000×30000 GIF and a GIF whose 16×16 screen holds a 10000×10000 frame (over
    the default limit, which must be seen before decoding)."""
    folder = workdir / "hostile"
    folder.mkdir()
    paths = {"long_png": folder / "long.png", "big_gif": folder / "big.gif", "frame_gif": folder / "frame.gif"}
    Image.fromarray(photo(6, 60000, 1)).save(paths["long_png"])
    paths["big_gif"].write_bytes(uniform_gif(30000, 30000))
    paths["frame_gif"].write_bytes(uniform_gif(16, 16, [(0, 0, 10000, 10000)]))
    return paths


def test_hostile_gifs_decode_as_described():
    """The generator is honest: small versions of the same files decode to what they claim."""
    for data, shape in ((uniform_gif(300, 200), (200, 300, 3)), (uniform_gif(16, 16, [(0, 0, 40, 30)]), (30, 40, 3))):
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == shape[1::-1]
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
        assert decoded.shape == shape and (decoded == [120, 60, 200]).all()
    pixels = tf.function(image_headers.decoded_pixels)
    assert pixels(tf.constant(uniform_gif(30000, 30000))).numpy() == 30000**2
    assert pixels(tf.constant(uniform_gif(16, 16, [(0, 0, 40, 30), (0, 0, 50, 50)]))).numpy() == 40 * 30 + 50 * 50


@pytest.mark.parametrize("kind", ["jpeg", "png", "gray_png", "gray_jpeg"])
def test_header_pixel_counts_of_ordinary_images(images, kind):
    data = images[kind].read_bytes()
    with Image.open(images[kind]) as image:
        expected = image.size[0] * image.size[1]
    assert image_headers.decoded_pixels(tf.constant(data)).numpy() == expected


def test_hostile_images_in_the_export_cost_little(base, images, hostile):
    """Through the SavedModel in a fresh process: the long PNG is served, the GIFs are refused with
    InvalidArgument naming the limit, each within seconds and tens of MB (decoding the big GIF
    took 27 s and 4.1 GB, the long PNG would have taken ~12 GB)."""
    result = check("hostile", str(base / "1"), str(images["jpeg"]), *(str(path) for path in hostile.values()))
    served = result[str(hostile["long_png"])]
    assert served["error"] is None and len(served["top_k_names"]) == 2, served
    for kind, pixels in (("big_gif", 30000 * 30000), ("frame_gif", 10000 * 10000)):
        refused = result[str(hostile[kind])]
        assert refused["error"] == "InvalidArgumentError", refused
        message = f"image 0 of the request has {pixels} pixels to decode, more than the limit of {DEFAULT_MAX_PIXELS}"
        assert message in refused["message"], refused
    for outcome in result.values():
        assert outcome["seconds"] < 5 and outcome["rss_growth_mb"] < 100, result


def _predict_process(*arguments: str) -> tuple[subprocess.CompletedProcess, float]:
    """Runs ``alexnet-tf predict ARGUMENTS`` in a process of its own: its result and peak RSS (MB).

    Its address space is capped at 8 GiB (a CPU TensorFlow process predicting a photo reserves
    ~1.6 GiB here), so a regression fails the test instead of taking the machine's memory.
    """

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 * 1024**3, resource.RLIM_INFINITY))

    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "alexnet_tf", "predict", *arguments],
            cwd=REPO, env=ENV, stdout=stdout, stderr=stderr, text=True, preexec_fn=cap_memory,
        )  # fmt: skip
        # Reaped here rather than by Popen, which would drop the child's resource usage.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0), stderr.seek(0)
        completed = subprocess.CompletedProcess(process.args, process.returncode, stdout.read(), stderr.read())
    return completed, usage.ru_maxrss / 1024


def test_predict_refuses_hostile_images_with_one_line_each(base, images, hostile):
    """``alexnet-tf predict`` in a process of its own: the GIFs get one error line each naming the
    limit, the others are predicted, and the peak memory is that of predicting one photo."""
    normal = str(images["jpeg"])
    baseline, baseline_rss = _predict_process(str(base / "1"), normal, "--top-k", "2")
    assert baseline.returncode == 0, baseline.stderr[-2000:]
    files = [normal, *(str(path) for path in hostile.values())]
    result, rss = _predict_process(str(base / "1"), *files, "--top-k", "2")
    assert result.returncode == 1, result.stderr[-2000:]
    assert [line for line in result.stdout.splitlines() if not line.startswith(" ")] == files[:2]
    limit = "pixels to decode, more than the limit of 89,478,485 (--max-pixels)"
    assert result.stderr.splitlines() == [
        f"Error: {hostile['big_gif']}: 900,000,000 {limit}",
        f"Error: {hostile['frame_gif']}: 100,000,000 {limit}",
    ]
    assert rss - baseline_rss < 150, (rss, baseline_rss)


# --- What the export contains ----------------------------------------------------------------


def function_devices(version_dir: pathlib.Path) -> set[tuple[str, str]]:
    """(function, device) for every node with a device, outside TF's own save/restore functions.

    TF pins its checkpoint save/restore ops to the CPU in every SavedModel; those are not ours.
    """
    saved_model = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    found = set()
    for graph in saved_model.meta_graphs:
        for function in graph.graph_def.library.function:
            name = function.signature.name
            if "_traced_save_" in name or "_traced_restore_" in name:
                continue
            found |= {(name, node.device) for node in function.node_def if node.device}
    return found


def test_no_training_device_pins_in_the_export(base):
    assert function_devices(base / "1") == set()
    assert b"/device:GPU" not in (base / "1" / "saved_model.pb").read_bytes()


def test_no_dropout_or_other_randomness_in_the_export(base):
    saved_model = saved_model_pb2.SavedModel.FromString((base / "2" / "saved_model.pb").read_bytes())
    ops = {node.op for function in saved_model.meta_graphs[0].graph_def.library.function for node in function.node_def}
    assert "Conv2D" in ops and "LRN" in ops  # the network is in there
    assert not [op for op in ops if "Random" in op or "Dropout" in op]


@pytest.mark.parametrize("layout", [{"two_towers": False}, {"grouped_convolutions": True}])
def test_the_inference_copy_of_other_layouts_computes_the_same(layout):
    network = tiny_network(**layout)
    copy = place_towers(network, None, dtype="float32")
    views = np.random.default_rng(1).normal(0, 50, (2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(copy(views, training=False), network(views, training=False), atol=1e-6)


def test_the_device_scan_finds_pins_in_a_model_that_was_not_rebuilt(run_dir, tmp_path):
    """The check above can fail: the trained network saved as it is keeps its tower pins."""
    model = keras.saving.load_model(str(run_dir / runs.BEST_MODEL), compile=False)
    network = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint("serve", lambda x: network(x, training=False), [tf.TensorSpec([None, 224, 224, 3])])
    archive.write_out(str(tmp_path / "pinned"), verbose=False)
    assert {device for _, device in function_devices(tmp_path / "pinned")} >= {"/device:GPU:0", "/device:GPU:1"}


def test_mixed_precision_run_exports_float32(workdir, tmp_path):
    run = make_run(workdir / "mixed_run", policy="mixed_bfloat16")
    version = pathlib.Path(export.export_model(str(run), str(tmp_path / "serving")))
    saved_model = saved_model_pb2.SavedModel.FromString((version / "saved_model.pb").read_bytes())
    signature = saved_model.meta_graphs[0].signature_def["serving_default"]
    assert signature.outputs["probabilities"].dtype == tf.float32.as_datatype_enum
    bfloat16_nodes = [
        node.name
        for function in saved_model.meta_graphs[0].graph_def.library.function
        for node in function.node_def
        if any(value.type == tf.bfloat16.as_datatype_enum for value in node.attr.values())
    ]
    assert bfloat16_nodes == []


def balance_classes(run_dir: pathlib.Path, records: pathlib.Path) -> pathlib.Path:
    """Sets fc8's biases so that every class has the same mean logit over the records' centre
    views: the answers then turn on small differences between images, as in a barely trained
    network, instead of one class winning everywhere, and bfloat16's rounding changes some."""
    path = run_dir / runs.BEST_MODEL
    model = keras.saving.load_model(str(path), compile=False)
    network = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    normalization = next(layer for layer in model.layers if isinstance(layer, ViewNormalization))
    pipeline = InputPipeline(InputConfig(str(records), batch_size=128, normalize_in_model=True))
    ((views, _),) = list(pipeline.eval_dataset())
    fc8 = network.get_layer("fc8")
    features = keras.Model(network.input, fc8.input)(normalization(views), training=False)
    kernel, _ = fc8.get_weights()
    fc8.set_weights([kernel, -(np.asarray(features, np.float64) @ kernel).mean(axis=0)])
    model.save(str(path))
    return run_dir


def test_evaluate_reports_what_the_export_of_a_mixed_precision_run_serves(tmp_path):
    """Issue 17 item 11: evaluate scored the bfloat16 network, the export serves a float32 copy,
    and their top-1 answers differed. By default evaluate now computes what the export serves;
    ``precision="trained"`` (the bfloat16 network) is the option that differs, and does here."""
    from alexnet_tf.evaluate import EvaluateConfig, evaluate

    classes = 50
    records = tmp_path / "records"
    write_synthetic_dataset(
        str(records), num_classes=classes, train_records=2, train_shards=1, validation_records=128,
        validation_shards=1, image_size=None, seed=5,
    )  # fmt: skip
    run = str(balance_classes(make_run(tmp_path / "run", policy="mixed_bfloat16", num_classes=classes), records))
    version = export.export_model(run, str(tmp_path / "serving"))
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(f"{records}/validation-*"))]
    served = tf.saved_model.load(version).signatures["tf_example"](examples=tf.constant(serialized))
    served_top1 = served["top_k_indices"].numpy()[:, 0]
    answers = {
        precision: evaluate(EvaluateConfig(str(records), (run,), progress=False, precision=precision)).predictions[run]
        for precision in ("float32", "trained")
    }
    np.testing.assert_array_equal(answers["float32"], served_top1)
    # The test can tell the two computations apart: "trained" (what evaluate computed before
    # issue 17) gave 4 of the 128 answers differently on the machine this was written on.
    assert (answers["trained"] != served_top1).any()


def test_a_logits_model_gets_a_softmax(workdir, images):
    run = make_run(workdir / "logits_run", logits=True)
    model = keras.saving.load_model(str(run / runs.BEST_MODEL), compile=False)
    network = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    views = np.random.default_rng(0).normal(0, 50, (2, 224, 224, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as assets:
        serving_model = export.load_serving_model(str(run), assets)
        got = serving_model.classify_images(tf.constant(views))[serving.PROBABILITIES].numpy()
    np.testing.assert_allclose(got, tf.nn.softmax(network(views, training=False)).numpy(), atol=1e-6)


# --- Versions: never half-written, never overwritten by accident ------------------------------


def test_next_version_and_refusal_to_overwrite(run_dir, tmp_path):
    serving_dir = tmp_path / "serving"
    (serving_dir / "7").mkdir(parents=True)
    (serving_dir / "notes").mkdir()
    assert export.export_model(str(run_dir), str(serving_dir)) == str(serving_dir / "8")
    with pytest.raises(InputError, match="8 exists; pass `overwrite=True`"):
        export.export_model(str(run_dir), str(serving_dir), version=8)
    (serving_dir / "8" / "marker").write_text("old")
    assert export.export_model(str(run_dir), str(serving_dir), version=8, overwrite=True) == str(serving_dir / "8")
    assert not (serving_dir / "8" / "marker").exists() and (serving_dir / "8" / "saved_model.pb").exists()
    assert sorted(p.name for p in serving_dir.iterdir()) == ["7", "8", "notes"]


def test_a_failed_export_leaves_nothing(run_dir, tmp_path, monkeypatch):
    def fail(*args):
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(export, "_write_warmup_requests", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_model(str(run_dir), str(tmp_path / "serving"))
    assert list((tmp_path / "serving").iterdir()) == []


_KILLED_EXPORT = """
import pathlib, sys, time
from alexnet_tf.serving import export
write = export._write_warmup_requests
def write_then_hang(model, path, name):
    write(model, path, name)
    pathlib.Path(sys.argv[2]).touch()  # the SavedModel is written; the version is not renamed yet
    time.sleep(600)
export._write_warmup_requests = write_then_hang
export.export_model(sys.argv[1], sys.argv[3])
"""


def test_an_export_killed_midway_leaves_no_version(run_dir, tmp_path):
    ready, serving_dir = tmp_path / "ready", tmp_path / "serving"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, str(run_dir), str(ready), str(serving_dir)], cwd=REPO, env=ENV
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the export did not get to its last step"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    (leftover,) = serving_dir.iterdir()
    assert leftover.name.startswith(".tmp-") and (leftover / "saved_model.pb").exists()
    assert export.existing_versions(str(serving_dir)) == []
    assert export.export_model(str(run_dir), str(serving_dir)) == str(serving_dir / "1")


def test_a_version_taken_meanwhile_is_never_replaced(run_dir, tmp_path, monkeypatch):
    """Another export finishing version 1 (and then 3) while this one writes: this one takes the
    next free number, and a --version that appears meanwhile is refused, the other's kept."""
    serving_dir = tmp_path / "serving"
    write = export._write_warmup_requests

    def write_while_another_finishes(versions):
        def write_then_another(model, path, name):
            write(model, path, name)
            for version in versions:
                (serving_dir / version).mkdir()
                (serving_dir / version / "saved_model.pb").write_text("the other export's")

        return write_then_another

    monkeypatch.setattr(export, "_write_warmup_requests", write_while_another_finishes(["1", "3"]))
    assert export.export_model(str(run_dir), str(serving_dir)) == str(serving_dir / "4")
    monkeypatch.setattr(export, "_write_warmup_requests", write_while_another_finishes(["5"]))
    with pytest.raises(InputError, match="5 was written by another export meanwhile"):
        export.export_model(str(run_dir), str(serving_dir), version=5)
    for version in ("1", "3", "5"):
        assert (serving_dir / version / "saved_model.pb").read_text() == "the other export's"
    assert sorted(p.name for p in serving_dir.iterdir()) == ["1", "3", "4", "5"]


# Both processes write their SavedModel, wait for each other, then claim a version at once.
_RACING_EXPORT = """
import os, pathlib, sys, time
from alexnet_tf.serving import export
from alexnet_tf.cli import main
sync = pathlib.Path(sys.argv[1])
write = export._write_warmup_requests
def write_then_wait(model, path, name):
    write(model, path, name)
    (sync / str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(list(sync.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
export._write_warmup_requests = write_then_wait
main(sys.argv[2:])
"""


def test_two_export_processes_at_once_get_two_versions(run_dir, tmp_path):
    """Issue 17 item 1: ``export A --export-dir B & export B --export-dir B &`` printed
    ``exported B/1`` twice and one model replaced the other."""
    sync, serving_dir = tmp_path / "sync", tmp_path / "serving"
    sync.mkdir()
    processes = {}
    for top_k in (1, 2):
        command = ["export", str(run_dir), "--export-dir", str(serving_dir), "--top-k", str(top_k)]
        processes[top_k] = subprocess.Popen(
            [sys.executable, "-c", _RACING_EXPORT, str(sync), *command],
            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    printed = {}
    for top_k, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        printed[top_k] = stdout.strip().removeprefix("exported ")
    assert len(list(sync.iterdir())) == 2  # both reached the claim before either made it
    assert sorted(printed.values()) == [str(serving_dir / "1"), str(serving_dir / "2")]
    assert sorted(p.name for p in serving_dir.iterdir()) == ["1", "2"]
    for top_k, version in printed.items():  # each printed version is its own model, and loads
        signature = tf.saved_model.load(version).signatures["serving_default"]
        assert signature.structured_outputs["top_k_indices"].shape[-1] == top_k


# --- Warm-up ---------------------------------------------------------------------------------


def test_warmup_records_parse_as_prediction_logs_and_run(base):
    requests = check("warmup", str(base / "1"))["requests"]
    assert [r["signature"] for r in requests] == ["serving_default", "serving_default", "image_tensor", "tf_example"]
    for request in requests:
        assert request["model"] == "alexnet" and not request["has_version"]
        assert request["reencodes_identically"] and request["batch"] == 1


# --- Classes ---------------------------------------------------------------------------------


def test_classes_come_from_metadata_json_too(tmp_path):
    write_synthetic_dataset(str(tmp_path), num_classes=2, train_records=2, train_shards=1, validation_records=2,
                            validation_shards=1)  # fmt: skip
    classes = load_classes(str(tmp_path), num_classes=2)
    assert [(c.index, c.wnid, c.name) for c in classes] == [(0, "n00000000", "class 0"), (1, "n00000001", "class 1")]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"index": 0, "wnid": "a", "name": "A"}, {"index": 2, "wnid": "b", "name": "B"}], "indices must be 0..1"),
        ([{"index": 0, "wnid": "a", "name": "A\nB"}, {"index": 1, "wnid": "b", "name": "B"}], "single line"),
        ([{"index": 0, "wnid": "a", "name": "A"}], "lists 1 classes but the model has 2 outputs"),
        ([{"index": 0, "wnid": "a"}], "unreadable class list"),
    ],
)
def test_bad_class_lists_are_refused(tmp_path, entries, message):
    path = tmp_path / CLASSES_FILENAME
    path.write_text(json.dumps({"classes": entries}))
    with pytest.raises(InputError, match=message):
        load_classes(str(path), num_classes=2)


def test_export_without_classes_says_what_to_pass(run_dir, tmp_path):
    bare = tmp_path / "model.keras"
    bare.write_bytes((run_dir / runs.BEST_MODEL).read_bytes())
    result = CliRunner().invoke(main, ["export", str(bare), "--export-dir", str(tmp_path / "serving")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "pass --classes" in result.output
    assert not (tmp_path / "serving").exists()


# --- predict ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["export", "run"])
def test_predict_lists_top_classes_and_reports_a_non_image(base, run_dir, images, model):
    source = str(base) if model == "export" else str(run_dir)
    files = [str(images["jpeg"]), str(images["text"]), str(images["png"])]
    result = CliRunner().invoke(main, ["predict", source, *files, "--top", "2"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == files[0] and lines[3] == files[2] and len(lines) == 6
    for line in lines[1:3] + lines[4:6]:
        probability, wnid, name = line.split(maxsplit=2)
        assert 0 < float(probability) <= 1 and wnid.startswith("n0000000") and name.startswith("class ")
    assert result.stderr.strip() == f"Error: {files[1]}: not a JPEG, PNG, GIF or BMP image, or a corrupt one"


def test_predict_json_matches_the_export(base, images):
    result = CliRunner().invoke(main, ["predict", str(base / "2"), str(images["png"]), "--top", "1", "--json"])
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.stdout)
    assert prediction["path"] == str(images["png"]) and len(prediction["top"]) == 1
    with pytest.raises(InputError, match="exported with `top_k=2`"), open_classifier(str(base), top_k=3):
        pass
    with pytest.raises(InputError, match="`max_pixels`: .* whose limit was set when it was exported"):
        with open_classifier(str(base), max_pixels=1000):
            pass


def test_predict_max_pixels_of_a_run(run_dir, images):
    jpeg = str(images["jpeg"])  # 333×250 = 83,250 pixels
    result = CliRunner().invoke(main, ["predict", str(run_dir), jpeg, "--max-pixels", "80000"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"Error: {jpeg}: 83,250 pixels to decode, more than the limit of 80,000 (--max-pixels)\n"
    assert CliRunner().invoke(main, ["predict", str(run_dir), jpeg, "--max-pixels", "83250"]).exit_code == 0


# --- tools/serving_client.py --------------------------------------------------------------------


@pytest.fixture
def fake_tf_serving(base):
    """A local HTTP server answering TF Serving's REST predict route from the export in-process."""
    import http.server
    import threading

    from tools.serving_client import predict_saved_model

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            answer = predict_saved_model(str(base), body)
            data = json.dumps(answer).encode()
            self.send_response(400 if "error" in answer else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_serving_client_rest_request_and_answer(fake_tf_serving, images):
    from tools.serving_client import main as client

    url, seen = fake_tf_serving
    files = [str(images["jpeg"]), str(images["gray_png"])]
    result = CliRunner().invoke(client, [*files, "--server", url, "--model", "alexnet", "--version", "2"])
    assert result.exit_code == 0, result.output
    ((path, body),) = seen
    assert path == "/v1/models/alexnet/versions/2:predict" and body["signature_name"] == "serving_default"
    assert [base64.b64decode(i["b64"]) for i in body["instances"]] == [images["jpeg"].read_bytes(),
                                                                      images["gray_png"].read_bytes()]  # fmt: skip
    lines = result.output.splitlines()
    assert lines[0] == files[0] and lines[3] == files[1] and len(lines) == 6
    assert all(line.split()[2] == "class" for line in lines[1:3] + lines[4:6])


def test_serving_client_reports_a_bad_image_as_the_request_error(fake_tf_serving, images):
    from tools.serving_client import main as client

    url, _ = fake_tf_serving
    result = CliRunner().invoke(client, [str(images["jpeg"]), str(images["text"]), "--server", url])
    assert result.exit_code == 1
    assert (
        "HTTP 400" in result.output and "image 1 of the request is not a JPEG, PNG, GIF or BMP image" in result.output
    )
