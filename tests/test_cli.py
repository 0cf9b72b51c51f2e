"""The command line as a new user meets it: quiet start-up, one-line errors for bad input."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from alexnet_tf import synthetic
from alexnet_tf.cli import main


@pytest.mark.slow
def test_commands_print_no_tensorflow_startup_noise(tmp_path):
    """A fresh process, no TF_CPP_MIN_LOG_LEVEL set: stderr carries nothing of TensorFlow's start-up
    (TF 2.21 prints its oneDNN note through absl before logging is set up, twice)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP")}
    run = subprocess.run(
        [sys.executable, "-m", "alexnet_tf", "summary", "--json", "--num-classes", "3", "--input-size", "64"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert '"parameters"' in run.stdout


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("records"))
    synthetic.write_synthetic_dataset(directory, train_records=4, train_shards=2, validation_records=2)
    return directory


def invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.output.startswith("Error: "), result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_show_augment_to_a_missing_folder_is_one_line_and_writes_nothing(records, tmp_path):
    output = tmp_path / "no" / "such" / "dir" / "grid.png"
    assert_one_line_error(
        invoke(["show-augment", "--data-dir", records, "-o", str(output)]), "cannot write", "grid.png"
    )
    assert not output.parent.exists()


def test_show_augment_from_records_without_metadata(tmp_path):
    (tmp_path / "train-00000-of-00001").write_bytes(b"not a record")
    result = invoke(["show-augment", "--data-dir", str(tmp_path), "-o", str(tmp_path / "grid.png")])
    assert_one_line_error(result, "metadata.json")
    assert not (tmp_path / "grid.png").exists()
