"""`alexnet-tf evaluate` against NumPy: top-k over known logits; centre, ten-crop and ensemble."""

import csv
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from alexnet_tf import AlexNet, synthetic
from alexnet_tf.cli import main
from alexnet_tf.errors import InputError
from alexnet_tf.evaluate import EvaluateConfig, EvaluationReport, _placed, evaluate, top_k
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.network.layers import with_view_normalization
from alexnet_tf.network.model import placed_devices
from tests.cluster import tf_configs

CLASSES = 6


def correct_by_rank(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Independent top-k: the label's rank is the number of classes scoring higher, or equal with
    a lower index (the documented tie rule); correct if that rank is below k."""
    label_scores = logits[np.arange(len(labels)), labels][:, None]
    lower_index = np.arange(logits.shape[1])[None, :] < labels[:, None]
    rank = np.sum((logits > label_scores) | ((logits == label_scores) & lower_index), axis=1)
    return rank < k


def test_top_k_matches_ranks_on_known_logits():
    rng = np.random.default_rng(0)
    logits = rng.permuted(np.tile(np.arange(10.0), (200, 1)), axis=1)  # distinct scores per row
    labels = rng.integers(0, 10, 200)
    for k in (1, 5):
        ours = np.any(top_k(logits, k) == labels[:, None], axis=1)
        np.testing.assert_array_equal(ours, correct_by_rank(logits, labels, k))
    assert top_k(np.array([[0.2, 0.5, 0.3]]), 5).tolist() == [[1, 2, 0]]  # fewer classes than k
    assert top_k(np.array([[0.5, 0.5, 0.0]]), 1).tolist() == [[0]]  # a tie: the lower index
    ties = np.array([[0.5, 0.5, 0.0], [0.1, 0.1, 0.1]])
    for k in (1, 2, 3):
        ours = np.any(top_k(ties, k) == np.array([1, 2])[:, None], axis=1)
        np.testing.assert_array_equal(ours, correct_by_rank(ties, np.array([1, 2]), k))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Records with 6 classes; four tiny models: on views (softmax), bare float (softmax), on
    views returning logits, and on views with its towers placed on two GPUs (as `fit
    --strategy two-tower` saves it on a GPU host; soft placement runs it here). Different seeds,
    so they disagree and the ensemble differs."""
    root = tmp_path_factory.mktemp("evaluate")
    records = str(root / "records")
    synthetic.write_synthetic_dataset(
        records, num_classes=CLASSES, train_records=6, train_shards=1, validation_records=18, validation_shards=2
    )
    pipeline = InputPipeline(InputConfig(records, normalize_in_model=True))
    paths = {}
    for name, seed, views, activation, towers in (
        ("views.keras", 1, True, "softmax", None),
        ("bare.keras", 2, False, "softmax", None),
        ("logits.keras", 3, True, None, None),
        ("placed.keras", 5, True, "softmax", ["/GPU:0", "/GPU:1"]),
    ):
        model = AlexNet(
            CLASSES, channel_multiplier=0.125, seed=seed, classifier_activation=activation, tower_devices=towers
        )
        # He-normal weights make the tiny models' outputs depend visibly on the image; fc8 scaled
        # so that logits stay O(1) (a saturated float32 softmax would tie at 0 and 1).
        for layer in model.layers:
            if hasattr(layer, "kernel"):
                scale = 0.02 if layer.name == "fc8" else 1.0
                layer.kernel.assign(scale * keras.initializers.HeNormal(seed=seed)(layer.kernel.shape))
        if views:
            model = with_view_normalization(model, pipeline.view_normalization())
        paths[name] = str(root / name)
        model.save(paths[name])
    return records, paths


def expected_probabilities(records: str, path: str, ten_crop: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each image's softmax, averaged over its views, computed here without alexnet_tf.evaluate."""
    model = keras.saving.load_model(path)
    # A fixed record order, so the models' rows line up for the ensemble.
    config = InputConfig(
        records, batch_size=4, normalize_in_model=True, lighting_strength=0, deterministic=True, seed=0
    )
    pipeline = InputPipeline(config)
    layer = pipeline.view_normalization()
    probabilities, labels = [], []
    for views, batch_labels in pipeline.eval_dataset(ten_crop=ten_crop):
        flat = {key: tf.reshape(value, [-1, *value.shape[(2 if ten_crop else 1) :]]) for key, value in views.items()}
        inputs = flat if isinstance(model.input, dict) else layer(flat)
        outputs = model(inputs, training=False).numpy().astype(np.float64)
        if path.endswith("logits.keras"):
            outputs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            outputs /= outputs.sum(axis=1, keepdims=True)
        probabilities.append(outputs.reshape(len(batch_labels), -1, CLASSES).mean(axis=1))
        labels.append(batch_labels.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_scores_and_ensemble_match_numpy(setup, ten_crop):
    records, paths = setup
    models = tuple(paths.values())
    report = evaluate(EvaluateConfig(records, models, ten_crop=ten_crop, batch_size=5, progress=False))
    expected = {path: expected_probabilities(records, path, ten_crop) for path in models}
    labels = next(iter(expected.values()))[1]
    assert all(np.array_equal(other, labels) for _, other in expected.values())
    np.testing.assert_array_equal(np.sort(report.labels), np.sort(labels))
    expected["ensemble"] = (np.mean([p for p, _ in expected.values()], axis=0), labels)
    scored = {scores.name: scores for scores in [*report.models, report.ensemble]}
    for name, (probabilities, labels) in expected.items():
        for k, got in ((1, scored[name].top1_accuracy), (5, scored[name].top5_accuracy)):
            assert got == pytest.approx(np.mean(correct_by_rank(probabilities, labels, k))), (name, k)
        assert scored[name].images == 18
    # Different models, and an ensemble that is none of them.
    outputs = [probabilities for probabilities, _ in expected.values()]
    assert all(not np.allclose(a, b, atol=1e-3) for i, a in enumerate(outputs) for b in outputs[i + 1 :])


def test_cli_table_json_csv_and_confusion_matrix(setup, tmp_path):
    records, paths = setup
    csv_path, png_path = tmp_path / "per_class.csv", tmp_path / "confusion.png"
    args = ["evaluate", "--data-dir", records, paths["views.keras"], paths["bare.keras"], "--no-progress"]
    table = CliRunner().invoke(main, [*args, "--per-class-csv", str(csv_path), "--confusion-matrix", str(png_path)])
    assert table.exit_code == 0, table.output
    assert "validation split, center views" in table.output and "ensemble" in table.output
    as_json = CliRunner().invoke(main, [*args, "--json", "--ten-crop"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["views"] == "ten-crop" and len(data["models"]) == 2 and data["ensemble"]["images"] == 18
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [int(row["class"]) for row in rows] == list(range(CLASSES))
    assert sum(int(row["images"]) for row in rows) == 18
    with Image.open(png_path) as picture:
        assert picture.format == "PNG" and picture.size == (800, 700)


def test_bad_models_are_one_line_errors(setup, tmp_path):
    records, paths = setup
    for model, message in (
        (str(tmp_path), "no best.keras or last.keras"),
        (str(tmp_path / "missing.keras"), "not a .keras file or a run directory"),
        (str(tmp_path / "model.h5"), "not a .keras file or a run directory"),
    ):
        result = CliRunner().invoke(main, ["evaluate", "--data-dir", records, model])
        assert result.exit_code == 1 and result.output.startswith("Error: ") and message in result.output
        assert result.output.count("\n") == 1
    wrong = AlexNet(3, channel_multiplier=0.125)
    wrong.save(str(tmp_path / "three.keras"))
    result = CliRunner().invoke(main, ["evaluate", "--data-dir", records, str(tmp_path / "three.keras")])
    assert result.exit_code == 1 and "predicts 3 classes, the dataset has 6" in result.output
    AlexNet(CLASSES, 112, channel_multiplier=0.125).save(str(tmp_path / "small.keras"))
    result = CliRunner().invoke(
        main, ["evaluate", "--data-dir", records, paths["bare.keras"], str(tmp_path / "small.keras")]
    )
    assert result.exit_code == 1 and "different input sizes" in result.output


def test_views_are_cut_at_the_models_input_size(setup, tmp_path):
    """A model on 112×112 inputs is scored on 112×112 centre and ten-crop views."""
    records, _ = setup
    small = str(tmp_path / "small.keras")
    AlexNet(CLASSES, 112, channel_multiplier=0.125, seed=4).save(small)
    for ten_crop in (False, True):
        report = evaluate(EvaluateConfig(records, (small,), ten_crop=ten_crop, progress=False))
        assert report.models[0].images == 18


def assert_scores_equal(printed_json: str, one: EvaluationReport) -> None:
    report = json.loads(printed_json)
    assert report["ensemble"] == one.ensemble.to_dict()
    assert report["models"] == [scores.to_dict() for scores in one.models]


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy",
    [["mirrored"], ["two-tower", "--fc-device", "/CPU:1"]],
    ids=["mirrored", "two-tower"],
)
def test_on_two_logical_cpus_gives_the_one_device_scores(setup, strategy):
    """In a fresh process (devices are fixed when TF starts), over the four models, one of them
    saved with its towers on two GPUs. mirrored: each replica scores half of every batch and the
    scores are gathered in order; two-tower: each network's towers on their own logical CPU."""
    records, paths = setup
    models = tuple(paths.values())
    one = evaluate(EvaluateConfig(records, models, ten_crop=True, batch_size=6, progress=False))
    run = subprocess.run(
        [sys.executable, "-m", "alexnet_tf", "evaluate", "--data-dir", records, *models, "--ten-crop",
         "--batch-size", "6", "--devices", "2", "--json", "--strategy", *strategy],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert_scores_equal(run.stdout, one)


def test_models_are_placed_for_the_strategy(setup, tmp_path):
    """Under two-tower the towers go on the given devices; otherwise a saved placement is dropped
    (the strategy decides). A network without separate towers cannot be placed."""
    _, paths = setup
    model = keras.saving.load_model(paths["placed.keras"])
    assert placed_devices(model.layers[-1]) == {"/GPU:0", "/GPU:1"}
    assert placed_devices(_placed("placed.keras", model, None).layers[-1]) == set()
    moved = _placed("placed.keras", model, ["/CPU:1", "/CPU:0"])
    assert isinstance(moved.input, dict)  # still the model on views
    network = moved.layers[-1]
    assert network.get_layer("conv1_tower0").device == "/CPU:1" and network.get_layer("conv5_tower1").device == "/CPU:0"
    assert network.get_layer("fc6").weights[0].path == model.layers[-1].get_layer("fc6").weights[0].path
    one_tower = AlexNet(CLASSES, channel_multiplier=0.125, two_towers=False)
    with pytest.raises(InputError, match="one.keras: alexnet: 0 separate towers, 2 tower devices"):
        _placed("one.keras", one_tower, ["/CPU:0", "/CPU:1"])


@pytest.mark.slow
def test_multi_worker_with_uneven_shares_gives_the_one_device_scores(setup, tmp_path):
    """Two worker processes; 3 shards, so worker 0 reads 12 images and worker 1 only 6 and scores
    empty batches while worker 0 finishes. Both print the whole report; only the chief writes."""
    _, paths = setup
    records = str(tmp_path / "records")
    synthetic.write_synthetic_dataset(
        records, num_classes=CLASSES, train_records=6, train_shards=1, validation_records=18, validation_shards=3
    )
    models = [paths["views.keras"], paths["placed.keras"]]
    one = evaluate(EvaluateConfig(records, tuple(models), ten_crop=True, batch_size=4, progress=False))
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alexnet_tf",
                "evaluate",
                "--data-dir",
                records,
                *models,
                "--ten-crop",
                "--batch-size",
                "4",
                "--strategy",
                "multi-worker",
                "--json",
                "--per-class-csv",
                str(tmp_path / f"per_class{index}.csv"),
            ],
            env={**os.environ, "TF_CONFIG": tf_config},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for index, tf_config in enumerate(tf_configs(2))
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
        assert_scores_equal(stdout, one)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "per_class0.csv").read_text())))
    assert sum(int(row["images"]) for row in rows) == 18
    assert not (tmp_path / "per_class1.csv").exists()
