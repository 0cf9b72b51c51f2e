"""``show-filters``, ``neighbours`` and ``plot``: the PNGs' sizes and that their pixels carry the data.

A tiny two-tower model (channel multiplier 0.125: 6 conv1 kernels per tower, fc7 of 512) on
72×72 synthetic records, saved as a run's ``best.keras`` the way `fit` saves it (on views).
"""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from alexnet_tf import AlexNet
from alexnet_tf.cli import main
from alexnet_tf.figures import curves, filters, neighbours
from alexnet_tf.figures.sheet import to_uint8
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.input.shards import interleave_records
from alexnet_tf.network.layers import network_of, with_view_normalization
from alexnet_tf.records import schema
from alexnet_tf.runs import HISTORY_FIELDS
from alexnet_tf.synthetic import write_synthetic_dataset

CLASSES = 4
CROP = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Records, and a run whose conv1 kernels are known: tower 0 grey, tower 1 coloured."""
    root = tmp_path_factory.mktemp("figures")
    records = str(root / "records")
    write_synthetic_dataset(
        records, num_classes=CLASSES, train_records=24, train_shards=2, validation_records=8, image_size=72
    )
    pipeline = InputPipeline(InputConfig(records, crop_size=CROP, normalize_in_model=True))
    network = AlexNet(CLASSES, CROP, channel_multiplier=0.125, initialization="he", seed=0)
    rng = np.random.default_rng(0)
    grey = rng.normal(size=(11, 11, 1, 6)).repeat(3, axis=2)  # the same pattern in R, G and B
    colour = rng.normal(size=(11, 11, 3, 6))
    colour[:, :, :, 2] = 0.0
    colour[:, :6, 0, 2] = 1.0  # kernel 2 of tower 1: red left part, blue right part
    colour[:, 6:, 2, 2] = 1.0
    network.get_layer("conv1_tower0").kernel.assign(grey)
    network.get_layer("conv1_tower1").kernel.assign(colour)
    run = root / "run"
    run.mkdir()
    with_view_normalization(network, pipeline.view_normalization()).save(str(run / "best.keras"))
    return records, str(run), grey, colour


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# --- show-filters ---------------------------------------------------------------------------


def test_show_filters_draws_each_kernel_where_it_belongs(setup, tmp_path):
    _, run, grey, colour = setup
    output = str(tmp_path / "filters.png")
    towers, (width, height) = filters.write_filters(run, output)
    pixels = read_png(output)
    assert pixels.shape == (height, width, 3)
    assert [t.name for t in towers] == ["conv1_tower0", "conv1_tower1"]
    for number, kernels in enumerate((grey, colour)):
        shown = to_uint8(filters.display_scale(np.transpose(kernels, [3, 0, 1, 2])))
        for index in range(6):
            top, left = filters.kernel_origin(towers, number, index)
            side = 11 * filters.ZOOM
            expected = shown[index].repeat(filters.ZOOM, axis=0).repeat(filters.ZOOM, axis=1)
            np.testing.assert_array_equal(pixels[top : top + side, left : left + side], expected)
    # The red-and-blue kernel, read back from the PNG: red on the left, blue on the right.
    top, left = filters.kernel_origin(towers, 1, 2)
    assert tuple(pixels[top + 5, left + 5]) == (255, 0, 0)
    assert tuple(pixels[top + 5, left + 10 * filters.ZOOM]) == (0, 0, 255)


def test_colour_saturation_separates_grey_from_colour_towers(setup):
    _, run, _, _ = setup
    towers = filters.conv1_towers(network_of(filters.load_model(run)[1]))
    assert towers[0].saturation == pytest.approx(0.0, abs=1e-6)
    assert towers[1].saturation > 0.3
    pure = np.zeros([1, 2, 2, 3])
    pure[0, 0, 0] = [1, 0, 0]  # one red pixel, three black: chroma 1, 0, 0, 0
    assert filters.kernel_saturation(filters.display_scale(pure)).tolist() == [0.25]


def test_show_filters_cli_prints_the_saturation_per_tower(setup, tmp_path):
    _, run, _, _ = setup
    result = CliRunner().invoke(main, ["show-filters", run, "-o", str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    assert "conv1_tower0: 6 kernels, mean colour saturation 0.000" in result.output
    assert os.path.getsize(tmp_path / "f.png") > 0


# --- neighbours ------------------------------------------------------------------------------


def training_jpegs(records: str, directory, count: int) -> list[str]:
    """The first ``count`` training records' JPEG bytes, written out as query files."""
    pipeline = InputPipeline(InputConfig(records, crop_size=CROP))
    paths = []
    for index, record in enumerate(interleave_records(pipeline.files(schema.TRAIN), deterministic=True).take(count)):
        features = tf.io.parse_single_example(record, {schema.ENCODED: tf.io.FixedLenFeature([], tf.string)})
        path = str(directory / f"query{index}.jpg")
        with open(path, "wb") as f:
            f.write(features[schema.ENCODED].numpy())
        paths.append(path)
    return paths


def test_a_training_image_is_its_own_nearest_neighbour(setup, tmp_path, capsys):
    records, run, _, _ = setup
    queries = training_jpegs(records, tmp_path, 3)
    output = str(tmp_path / "neighbours.png")
    found, (width, height) = neighbours.write_neighbours(
        output, run, records, queries, k=4, batch_size=5, progress=True
    )
    bar = capsys.readouterr().err  # 24 records in batches of 5: five batches, the last short
    assert "neighbours: 100%" in bar and "5/5" in bar, bar
    assert found.images.shape == (3, 4, CROP, CROP, 3)
    assert np.all(np.diff(found.distances, axis=1) >= 0)  # nearest first
    for q in range(3):
        # Itself, first: the same centre crop (up to the crop-edge chroma of decode_and_crop_jpeg) ...
        difference = np.abs(found.images[q, 0].astype(int) - found.query_images[q].astype(int))
        assert np.mean(difference) < 1.0
        assert found.distances[q, 0] < 0.05 * found.distances[q, 1]
    # The streamed top-k over batches of 5 equals a full sort of all 24 distances, computed here.
    model = neighbours.load_model(run)[1]
    network, normalization = neighbours.inference_parts(model, run)
    fc7 = tf.keras.Model(network.input, network.get_layer("fc7").output)
    pipeline = InputPipeline(InputConfig(records, batch_size=24, crop_size=CROP, normalize_in_model=True))
    views, _ = next(iter(pipeline.eval_dataset(schema.TRAIN)))
    train = fc7(normalization(views)).numpy().astype(np.float64)
    query = fc7(normalization(neighbours.query_views(queries, 72, CROP))).numpy().astype(np.float64)
    everything = np.sort(np.linalg.norm(query[:, None] - train[None], axis=-1), axis=1)[:, :4]
    np.testing.assert_allclose(found.distances, everything, rtol=1e-5, atol=1e-3)
    pixels = read_png(output)
    assert pixels.shape == (height, width, 3)
    for q in range(3):
        for rank in (-1, 0):
            top, left = neighbours.neighbour_origin(found, q, rank)
            image = found.query_images[q] if rank < 0 else found.images[q, rank]
            np.testing.assert_array_equal(pixels[top : top + CROP, left : left + CROP], image)


def test_neighbours_rejects_what_is_not_an_image(setup, tmp_path):
    records, run, _, _ = setup
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    runner = CliRunner()
    for args in (
        [run, str(text)],
        [run, str(tmp_path / "missing.jpg")],
        [str(tmp_path / "no-run"), str(text)],
    ):
        result = runner.invoke(main, ["neighbours", *args, "--data-dir", records, "-o", str(tmp_path / "n.png")])
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "n.png").exists()


# --- plot ------------------------------------------------------------------------------------


def write_history(run, rows: list[dict]) -> None:
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "history.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def history_rows(val_top1: list[float]) -> list[dict]:
    return [
        dict(epoch=e, lr=0.01 * 0.1 ** (e // 2), loss=2.0 - 0.3 * e, top1=0.2 + 0.1 * e, top5=0.5 + 0.1 * e,
             val_loss=2.1 - 0.2 * e, val_top1=v, val_top5=min(1.0, v + 0.3), images_per_sec=100.0)
        for e, v in enumerate(val_top1)
    ]  # fmt: skip


def test_plot_draws_the_history(tmp_path):
    run = str(tmp_path / "run")
    write_history(run, history_rows([0.3, 0.4, 0.55, 0.6]))
    figure = curves.curves_figure(curves.read_history(run))
    loss, top1, top5, rate = figure.axes
    train, validation = top1.get_lines()
    np.testing.assert_allclose(train.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(train.get_ydata(), [0.8, 0.7, 0.6, 0.5])
    np.testing.assert_allclose(validation.get_ydata(), [0.7, 0.6, 0.45, 0.4])
    np.testing.assert_allclose(rate.get_lines()[0].get_ydata(), [0.01, 0.01, 0.001, 0.001])
    assert rate.get_yscale() == "log"
    np.testing.assert_allclose(loss.get_lines()[1].get_ydata(), [2.1, 1.9, 1.7, 1.5])
    np.testing.assert_allclose(top5.get_lines()[1].get_ydata(), [0.4, 0.3, 0.15, 0.1])


def test_plot_png_changes_with_the_history(tmp_path):
    images = []
    for name, val_top1 in (("a", [0.3, 0.4, 0.55, 0.6]), ("b", [0.3, 0.2, 0.1, 0.6])):
        run = str(tmp_path / name)
        write_history(run, history_rows(val_top1))
        result = CliRunner().invoke(main, ["plot", run, "-o", str(tmp_path / f"{name}.png")])
        assert result.exit_code == 0, result.output
        images.append(read_png(tmp_path / f"{name}.png"))
    assert images[0].shape == images[1].shape == (curves.FIGSIZE[1] * curves.DPI, curves.FIGSIZE[0] * curves.DPI, 3)
    assert np.any(images[0] != images[1])


def test_plot_bad_input_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    write_history(str(tmp_path / "bad"), [])
    with open(tmp_path / "bad" / "history.csv", "a") as f:
        f.write("0,0.01,nan-ish,,,,,,\n")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    for run in ("missing", "empty", "bad", "other.csv"):
        result = CliRunner().invoke(main, ["plot", str(tmp_path / run), "-o", str(tmp_path / "c.png")])
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    result = CliRunner().invoke(main, ["show-filters", str(tmp_path / "missing"), "-o", str(tmp_path / "f.png")])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert not (tmp_path / "c.png").exists()
