"""``alexnet-tf show-augment`` through the CLI, on a tiny synthetic dataset."""

import io

import numpy as np
from click.testing import CliRunner
from PIL import Image

from alexnet_tf import synthetic
from alexnet_tf.cli import main
from alexnet_tf.input import visualize


def test_show_augment_writes_a_png_grid_of_the_expected_size(tmp_path):
    data_dir = str(tmp_path / "data")
    synthetic.write_synthetic_dataset(
        data_dir, train_records=4, train_shards=2, validation_records=0, validation_shards=0
    )
    output = tmp_path / "grid.png"
    result = CliRunner().invoke(
        main, ["show-augment", "--data-dir", data_dir, "-o", str(output), "--images", "2", "--views", "3"]
    )
    assert result.exit_code == 0, result.output
    rows, columns = visualize.grid_shape(2, 3)
    assert (rows, columns) == (4, 10)  # per image: a row of views, a row of the ten test crops
    with Image.open(io.BytesIO(output.read_bytes())) as grid:
        assert grid.format == "PNG"
        assert grid.size == (columns * 128, rows * 144)  # 128-pixel images under 16-pixel titles
        assert np.asarray(grid.convert("L")).std() > 10  # something was drawn
    assert f"({columns * 128}x{rows * 144})" in result.output
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".tmp-")]
    assert "PCA lighting is 10x the paper's" in result.output


def test_each_training_view_says_how_much_its_lighting_is_exaggerated(tmp_path):
    data_dir = str(tmp_path / "data")
    synthetic.write_synthetic_dataset(data_dir, train_records=1, validation_records=0, validation_shards=0)

    def view_titles(**options) -> list[str]:
        axes = visualize.augment_grid(data_dir, images=1, views=2, **options).axes
        return [ax.get_title() for ax in axes[1:3]]  # the row: whole image, then the two views

    assert all(title.endswith(" light×10") for title in view_titles())
    assert not any("light" in title for title in view_titles(lighting_strength=1))


def test_show_augment_reports_a_missing_dataset_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["show-augment", "--data-dir", str(tmp_path), "-o", str(tmp_path / "g.png")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "metadata.json" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "g.png").exists()
