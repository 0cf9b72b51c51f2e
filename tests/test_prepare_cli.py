"""``alexnet-tf prepare-data``: the summary, one-line errors with exit status 1, Ctrl-C."""

from __future__ import annotations

import csv
import os

import pytest
from click.testing import CliRunner

from alexnet_tf.cli import main
from alexnet_tf.prepare import images
from tests.tiny_imagenet import WNIDS, make_dataset


def run(*args: str):
    return CliRunner().invoke(main, ["prepare-data", *args, "--workers", "1", "--no-progress"])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(str(tmp_path / "imagenet"), per_class=2, val_per_class=1, val_form="csv")


def test_prepare_data_prints_a_summary_and_then_nothing_to_do(dataset, tmp_path):
    output = str(tmp_path / "records")
    result = run(dataset.root, output, "--train-shards", "3", "--validation-shards", "1")
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Wrote 9 train records in 3 shards and 3 validation records in 1 shards")
    assert "3 files skipped" in last
    assert "validation labels: LOC_val_solution.csv" in result.output
    again = run(dataset.root, output, "--train-shards", "3", "--validation-shards", "1")
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_fewer_files_than_shards_gives_fewer_shards_and_says_so(dataset, tmp_path):
    result = run(dataset.root, str(tmp_path / "records"), "--train-shards", "1000")
    assert result.exit_code == 0, result.output
    assert "train: 12 files for 1000 shards; wrote 12 shards of one file each" in result.output
    assert "train: 3 shards are empty, all their files were skipped" in result.output  # the 3 bad files
    assert os.path.exists(tmp_path / "records" / "train-00011-of-00012")


def test_ctrl_c_exits_130_and_the_rerun_finishes(dataset, tmp_path, monkeypatch):
    original, calls = images.prepare_image, [0]

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(images, "prepare_image", interrupted)
    output = str(tmp_path / "records")
    result = run(dataset.root, output, "--train-shards", "3", "--overwrite")
    assert result.exit_code == 130
    # The library's note names its parameter; the command line, its flag.
    assert result.output.strip().splitlines()[-1] == (
        "interrupted (Ctrl-C): the finished shards are kept; re-run the same command without --overwrite to resume"
    )
    assert "Traceback" not in result.output
    monkeypatch.undo()
    resumed = run(dataset.root, output, "--train-shards", "3")
    assert resumed.exit_code == 0 and "kept from the interrupted run" in resumed.output


def test_missing_and_empty_directories(tmp_path):
    assert_one_line_error(run(str(tmp_path / "nowhere"), str(tmp_path / "out")), "nowhere: no such directory")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    assert_one_line_error(run(str(tmp_path / "empty"), str(tmp_path / "out")), "train: no class folders")
    (tmp_path / "empty" / "train" / "n01440764").mkdir()
    (tmp_path / "empty" / "train" / "n01440764" / ".DS_Store").write_bytes(b"x")
    assert_one_line_error(run(str(tmp_path / "empty"), str(tmp_path / "out")), "n01440764: empty class folder")


def test_label_file_errors(tmp_path):
    data = make_dataset(str(tmp_path / "imagenet"), per_class=1, val_per_class=2, val_form="lines", quirks=False)
    out = str(tmp_path / "out")
    assert_one_line_error(run(data.root, out), "images without class folders", "--val-labels")
    with open(data.val_labels) as f:
        lines = f.read().splitlines()
    with open(data.val_labels, "w") as f:
        f.write("\n".join(lines[:-1]))
    assert_one_line_error(run(data.root, out, "--val-labels", data.val_labels), "5 labels for 6 files")
    with open(data.val_labels, "w") as f:
        f.write("\n".join(["n99999999", *lines[1:]]))
    assert_one_line_error(run(data.root, out, "--val-labels", data.val_labels), "line 1: unknown wnid 'n99999999'")
    with open(data.val_labels, "w") as f:
        f.write("\n".join(["65", *lines[1:]]))
    assert_one_line_error(run(data.root, out, "--val-labels", data.val_labels), "devkit")

    solution = str(tmp_path / "LOC_val_solution.csv")
    with open(solution, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        writer.writerow(["ILSVRC2012_val_00000001", f"{WNIDS[0]} 1 2 3 4"])
        writer.writerow(["ILSVRC2012_val_00099999", f"{WNIDS[0]} 1 2 3 4"])
    assert_one_line_error(
        run(data.root, out, "--val-labels", solution), "line 3: image 'ILSVRC2012_val_00099999' is not in"
    )
    assert_one_line_error(run(data.root, out, "--val-labels", str(tmp_path / "nope.csv")), "nope.csv: no such file")


def test_unwritable_output_and_bad_flags(dataset, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert_one_line_error(run(dataset.root, str(blocker / "records")), "cannot create the output directory")
    assert_one_line_error(run(dataset.root, str(tmp_path / "out"), "--jpeg-quality", "0"), "--jpeg-quality 0")
    assert_one_line_error(run(dataset.root, str(tmp_path / "out"), "--val-fraction", "0.5"), "drop --val-fraction")


def test_refuses_to_mix_with_foreign_shards(dataset, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train-00000-of-00001").write_bytes(b"")
    assert_one_line_error(run(dataset.root, str(tmp_path / "out")), "already holds train shards", "--overwrite")
    result = run(dataset.root, str(tmp_path / "out"), "--overwrite", "--train-shards", "2")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "train-00000-of-00001").exists()


def test_refuses_an_output_inside_the_class_folders(tmp_path):
    data = make_dataset(str(tmp_path / "flowers"), per_class=1, val_form=None, quirks=False)
    classes_root = os.path.join(data.root, "train")  # a root of class folders, no train/ inside
    assert_one_line_error(run(classes_root, os.path.join(classes_root, "records")), "inside the dataset folder")


def test_a_class_folder_of_unreadable_files_is_a_warning_naming_it(dataset, tmp_path):
    folder = os.path.join(dataset.root, "train", "n09999999")
    os.makedirs(folder)
    for name in ("a.JPEG", "b.JPEG"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"not an image")
    result = run(dataset.root, str(tmp_path / "records"), "--train-shards", "2", "--validation-shards", "1")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: 1 of 4 classes has no training records, all its files were skipped (reasons in "
        f"metadata.json): {folder}"
    ], result.output
