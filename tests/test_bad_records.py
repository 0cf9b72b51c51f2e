"""Bad records: an image inside a record that is not a JPEG of the declared size, damaged JPEG data,
a truncated or garbled shard. By default the first stops the input with one line naming the shard
and the record; with skip_bad_records they are left out, named and counted."""

import os
import re
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from alexnet_tf import synthetic
from alexnet_tf.cli import main
from alexnet_tf.errors import InputError
from alexnet_tf.input import bad_records
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from tests import bad_data

SIDE = 72  # the datasets' declared image side
SHARD = "train-00001-of-00002"  # records 0-3 of the 8 training records' second shard
DAMAGE = {
    # kind: (what is done to SHARD, records it loses, what the error says about them)
    "garbage": (lambda shard: bad_data.replace_image(shard, 1, bad_data.garbage()), 1, "record 1 is not a JPEG image"),
    "gif": (lambda shard: bad_data.replace_image(shard, 1, bad_data.gif()), 1, "record 1 is not a JPEG image (a GIF)"),
    "larger jpeg": (
        lambda shard: bad_data.replace_image(shard, 1, bad_data.jpeg(2000)),
        1,
        f"record 1 is a 2000×2000 JPEG where {SIDE}×{SIDE} is declared",
    ),
    "bomb header": (
        lambda shard: bad_data.replace_image(shard, 1, bad_data.bomb_header(20000)),
        1,
        f"record 1 is a 20000×20000 JPEG where {SIDE}×{SIDE} is declared",
    ),
    "truncated shard": (bad_data.truncate, 2, "records 2-3 cannot be read: the shard is truncated or corrupt"),
    "garbled shard": (bad_data.garble, 2, "records 2-3 cannot be read: the shard is truncated or corrupt"),
}
READS = {
    "center": lambda pipeline: pipeline.eval_dataset("train"),
    "ten-crop": lambda pipeline: pipeline.eval_dataset("train", ten_crop=True),
    "training": lambda pipeline: pipeline.train_dataset().take(12),  # three passes
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("clean"))
    synthetic.write_synthetic_dataset(
        directory,
        num_classes=2,
        train_records=8,
        train_shards=2,
        validation_records=2,
        validation_shards=1,
        image_size=SIDE,
    )
    return directory


def damaged(clean: str, directory, kind: str | None) -> str:
    """A copy of the clean dataset with ``kind`` of damage done to `SHARD` (None: none yet)."""
    shutil.copytree(clean, directory)
    if kind is not None:
        DAMAGE[kind][0](os.path.join(directory, SHARD))
    return str(directory)


def pipeline(directory: str, skip: bool = False) -> InputPipeline:
    return InputPipeline(InputConfig(directory, batch_size=2, crop_size=64, seed=0, skip_bad_records=skip))


@pytest.mark.parametrize(
    "kind, read",
    [(kind, "center") for kind in DAMAGE]
    + [("gif", "training"), ("truncated shard", "training"), ("bomb header", "ten-crop")],
)
def test_a_bad_record_stops_the_input_naming_its_shard_and_number(clean, tmp_path, kind, read):
    directory = damaged(clean, tmp_path / "data", kind)
    with pytest.raises(InputError) as raised, bad_records.explained(directory):
        for _ in READS[read](pipeline(directory)):
            pass
    message = str(raised.value)
    assert f"{directory}/{SHARD}: {DAMAGE[kind][2]}" in message
    # Worded for a Python caller, by parameter; the command line names its flag (test_cli).
    assert "`skip_bad_records=True`" in message and "\n" not in message
    assert raised.value.parameters == ("skip_bad_records",)


@pytest.mark.parametrize("kind", DAMAGE)
def test_skip_bad_records_leaves_them_out_named_and_counted(clean, tmp_path, kind):
    directory = damaged(clean, tmp_path / "data", kind)
    _, lost, reason = DAMAGE[kind]
    reader = pipeline(directory, skip=True)
    labels = [label for _, batch in reader.eval_dataset("train") for label in batch.numpy()]
    assert len(labels) == 8 - lost
    for _ in reader.train_dataset().take(12):  # training reads past them, pass after pass
        pass
    skipped = reader.skipped["train"]
    (record,) = skipped.records()
    assert str(record).startswith(f"{directory}/{SHARD}: {reason}")
    assert skipped.count() == lost
    assert skipped.describe("training").startswith(f"skipped {lost} bad training record")


def test_damaged_jpeg_data_is_named_by_its_dataset_or_skipped_by_name(clean, tmp_path):
    """A sound header over truncated data: only decoding finds it (skip_bad_records decodes every
    record at 1/8 scale, which reads all of its data)."""
    directory = damaged(clean, tmp_path / "data", None)
    bad_data.replace_image(os.path.join(directory, SHARD), 1, bad_data.truncated_jpeg(SIDE))
    advice = "does not decode .*`skip_bad_records=True`"
    with pytest.raises(InputError, match=f"a record of {re.escape(directory)} {advice}"):
        with bad_records.explained(directory):
            list(pipeline(directory).eval_dataset("train"))
    reader = pipeline(directory, skip=True)
    assert sum(len(labels) for _, labels in reader.eval_dataset("train")) == 7
    assert [str(record) for record in reader.skipped["train"].records()] == [
        f"{directory}/{SHARD}: record 1 does not decode (damaged JPEG data, or not a tf.train.Example of the "
        "dataset's schema)"
    ]


def test_records_of_original_geometry_are_checked_against_their_own_size_and_the_pixel_limit(tmp_path):
    directory = str(tmp_path / "data")
    synthetic.write_synthetic_dataset(directory, num_classes=2, train_records=4, train_shards=1, image_size=None)
    shard = os.path.join(directory, "train-00000-of-00001")
    bad_data.replace_image(shard, 2, bad_data.jpeg(100))
    with pytest.raises(InputError, match=r"train-00000-of-00001: record 2 is a 100×100 JPEG where \d+×\d+ is declared"):
        with bad_records.explained(directory):
            list(pipeline(directory).eval_dataset("train"))
    bad_data.replace_image(shard, 2, bad_data.bomb_header(20000))
    with pytest.raises(InputError, match="record 2 is a 20000×20000 JPEG, more than the 89,478,485 pixels allowed"):
        with bad_records.explained(directory):
            list(pipeline(directory).eval_dataset("train", ten_crop=True))


# --- fit and evaluate through the command line ----------------------------------------------------------

TINY = "--set input.crop_size=64 --set model.channel_multiplier=0.125 --set training.batch_size=2 --quiet".split()
ENV = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
TENSORFLOW_LOG = re.compile(r"[IWEF]\d{4} |\s|Corrupt JPEG data")  # C++ log lines and their continuations


def run(*args: str) -> subprocess.CompletedProcess:
    """The command in a fresh process: what a terminal shows."""
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf", *args], capture_output=True, text=True, env=ENV, timeout=300
    )


def invoke(*args: str):
    """The command in this process (faster), which must succeed."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def assert_one_error_line(done: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert lines and lines[-1].startswith("Error: "), done.stderr
    assert "Traceback" not in done.stderr and "Error" not in done.stdout, done.stderr
    # Before the line, at most TensorFlow's own C++ log of the failed step.
    assert all(TENSORFLOW_LOG.match(line) for line in lines[:-1]), done.stderr
    for fragment in fragments:
        assert fragment in lines[-1], done.stderr


@pytest.mark.slow
def test_fit_and_evaluate_name_a_bad_record_in_one_line_or_skip_and_count_it(clean, tmp_path):
    directory = damaged(clean, tmp_path / "data", "gif")
    bad_data.replace_image(os.path.join(directory, "validation-00000-of-00001"), 1, bad_data.jpeg(2000))
    model_dir = str(tmp_path / "run")
    fit = ["fit", "--data-dir", directory, "--model-dir", model_dir, *TINY, "--set", "training.epochs=2"]
    evaluate = ["evaluate", "--data-dir", directory, model_dir, "--no-progress"]
    training = f"{directory}/{SHARD}: record 1 is not a JPEG image (a GIF)"
    validation = f"{directory}/validation-00000-of-00001: record 1 is a 2000×2000 JPEG where {SIDE}×{SIDE} is declared"

    assert_one_error_line(run(*fit), training, "--skip-bad-records")
    printed = invoke(*fit, "--skip-bad-records").stdout
    for epoch in (1, 2):
        assert f"epoch {epoch}: skipped 1 bad training record ({training})" in printed
        assert f"epoch {epoch}: skipped 1 bad validation record ({validation})" in printed
    assert_one_error_line(run(*evaluate), validation, "--skip-bad-records")
    done = invoke(*evaluate, "--skip-bad-records", "--json")
    assert '"images": 1' in done.stdout
    assert done.stderr.splitlines()[-1] == f"skipped 1 bad validation record ({validation})"
