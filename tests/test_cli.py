"""The command line as a new user meets it: quiet start-up, one-line errors for bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from alexnet_tf import synthetic
from alexnet_tf.cli import main
from tests import bad_data


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


TINY_FIT = "--set input.crop_size=64 --set model.channel_multiplier=0.125 --set training.batch_size=2 --quiet".split()


@pytest.mark.slow
def test_a_normal_fit_and_evaluate_print_no_tensorflow_warnings(records, tmp_path):
    """A fresh process, no TF_CPP_MIN_LOG_LEVEL set: three epochs of fit (a new input iterator per
    epoch and per validation pass), then evaluate, and stderr stays empty. tf.distribute's
    per-device generator dataset logged `GeneratorDatasetOp … will not be optimized` for these."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP")}
    run = str(tmp_path / "run")
    commands = [
        ["fit", "--data-dir", records, "--model-dir", run, *TINY_FIT, "--set", "training.epochs=3"],
        ["evaluate", "--data-dir", records, run, "--no-progress"],
    ]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "alexnet_tf", *command], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr


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


# --- Every command's bad inputs: one table ---------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, records) -> dict[str, str]:
    """Paths the bad-input table refers to: good records, a run, a plain file, records another tool
    wrote (shards, no metadata), records with a truncated shard, with a garbled one, with bad images
    in records, a run whose only checkpoint is damaged, a missing path."""
    import keras

    from alexnet_tf import AlexNet
    from alexnet_tf.input.pipeline import InputConfig, InputPipeline
    from alexnet_tf.network.layers import with_view_normalization

    root = tmp_path_factory.mktemp("world")
    run = root / "run"
    run.mkdir()
    pipeline = InputPipeline(InputConfig(records, normalize_in_model=True))
    model = with_view_normalization(AlexNet(4, channel_multiplier=0.125, seed=0), pipeline.view_normalization())
    model.save(str(run / "best.keras"))
    keras.backend.clear_session()
    plain = root / "file.txt"
    plain.write_text("not a directory, not an image, not a model")
    foreign = root / "foreign"
    foreign.mkdir()
    for name in sorted(os.listdir(records)):
        if name.startswith("train-"):
            (foreign / name).write_bytes((root.parent / records / name).read_bytes())
    truncated = root / "truncated"
    synthetic.write_synthetic_dataset(str(truncated), train_records=4, train_shards=1, validation_records=2)
    shard = next(path for path in truncated.iterdir() if path.name.startswith("train-"))
    shard.write_bytes(shard.read_bytes()[:-100])
    unfinished = root / "unfinished"  # a run interrupted before its first epoch ended
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
    badmeta = root / "badmeta"
    shutil.copytree(records, badmeta)
    metadata = json.loads((badmeta / "metadata.json").read_text())
    metadata["splits"]["train"]["num_records"] = "lots"
    (badmeta / "metadata.json").write_text(json.dumps(metadata))
    garbled, images = root / "garbled", root / "images"
    for directory in (garbled, images):
        synthetic.write_synthetic_dataset(
            str(directory), train_records=4, train_shards=1, validation_records=2, validation_shards=1
        )
    bad_data.garble(str(garbled / "train-00000-of-00001"))
    bad_data.replace_image(str(images / "train-00000-of-00001"), 1, bad_data.gif())
    bad_data.replace_image(str(images / "validation-00000-of-00001"), 1, bad_data.bomb_header(20000))
    damaged = root / "damaged" / "checkpoints"
    damaged.mkdir(parents=True)
    (damaged / "checkpoint").write_text('model_checkpoint_path: "ckpt-8"\n')
    (damaged / "ckpt-8.index").write_bytes(b"\0" * 64)
    (damaged / "ckpt-8.data-00000-of-00001").write_bytes(b"\0" * 64)
    return {
        "RECORDS": records,
        "RUN": str(run),
        "FILE": str(plain),
        "FOREIGN": str(foreign),
        "TRUNCATED": str(truncated),
        "UNFINISHED": str(unfinished),
        "BADMETA": str(badmeta),
        "GARBLED": str(garbled),
        "IMAGES": str(images),
        "DAMAGED": str(damaged.parent),
        "MISSING": str(root / "missing"),
        "NOPARENT": str(root / "no" / "such" / "dir"),
    }


def _final_outputs(directory: str, midway: bool) -> list[str]:
    """Files under ``directory`` other than temporaries and, if the command failed ``midway`` (a
    damaged shard or record is found while reading), the resume state that lets the re-run resume. Any
    other refusal comes before anything is written: a recipe.yaml left behind would refuse the
    corrected command as "a different recipe"."""
    state = ("_prepare", "_index", "checkpoints", "tensorboard", "recipe.yaml", "classes.json") if midway else ()
    found = []
    for folder, _, names in os.walk(directory):
        for name in names:
            parts = os.path.relpath(os.path.join(folder, name), directory).split(os.sep)
            if not any(part.startswith(".tmp-") or part in state for part in parts):
                found.append(os.path.join(folder, name))
    return found


BAD_INPUTS = [
    # (command line with placeholders, a fragment the error must contain)
    ("summary --input-size 32", "--input-size 32: must be at least 64"),
    ("summary --channel-multiplier 0", "--channel-multiplier"),
    ("show-augment --data-dir MISSING -o NOPARENT/grid.png", "no such directory"),
    ("show-augment --data-dir FILE -o NOPARENT/grid.png", "not a directory"),
    ("show-augment --data-dir FOREIGN -o NOPARENT/grid.png", "index-records"),
    ("show-augment --data-dir RECORDS -o NOPARENT/grid.png", "cannot write"),
    ("show-augment --data-dir TRUNCATED -o NOPARENT/grid.png", "train-00000-of-00001: record 3 cannot be read"),
    ("show-augment --data-dir IMAGES -o NOPARENT/grid.png", "train-00000-of-00001: record 1 is not a JPEG image"),
    ("show-augment --data-dir RECORDS -o NOPARENT/grid.png --images 0", "--images"),
    ("prepare-data MISSING NOPARENT/out", "missing"),
    ("prepare-data FILE NOPARENT/out", "file.txt"),
    ("prepare-data RECORDS NOPARENT/out --jpeg-quality 0", "--jpeg-quality 0: must be in 1..100"),
    ("index-records MISSING --no-progress", "missing"),
    ("index-records FILE --no-progress", "file.txt"),
    ("index-records TRUNCATED --output NOPARENT/index --no-progress", "truncated"),
    ("fit --data-dir MISSING --model-dir NOPARENT/run --quiet", "no such directory"),
    ("fit --data-dir FOREIGN --model-dir NOPARENT/run --quiet", "index-records"),
    (
        "fit --data-dir BADMETA --model-dir NOPARENT/run --quiet",
        "metadata.json: unreadable metadata (splits.train.num_records",
    ),
    ("fit --data-dir RECORDS --model-dir NOPARENT/run --pipeline MISSING --quiet", "(demo, finetune, paper)"),
    ("fit --data-dir RECORDS --model-dir NOPARENT/run --recipe MISSING --quiet", "(demo, finetune, paper)"),
    ("fit --data-dir RECORDS --model-dir NOPARENT/run --set training.batch_size=0 --quiet", "batch_size"),
    ("fit --data-dir RECORDS --model-dir NOPARENT/run --batch-size 8 --quiet", "fewer than training.batch_size=8"),
    (
        "fit --data-dir RECORDS --model-dir NOPARENT/run --strategy multi-worker --worker-timeout 0 --quiet",
        "Invalid value for '--worker-timeout'",
    ),
    (
        "fit --data-dir RECORDS --model-dir NOPARENT/run --set training.epochs=1 --set input.crop_size=64 "
        "--set model.channel_multiplier=0.125 --set training.batch_size=2 --quiet --set input.shuffle_buffer=-1",
        "shuffle_buffer",
    ),
    *(
        (
            f"fit --data-dir {data} --model-dir NOPARENT/run --set input.crop_size=64 --set training.batch_size=2 "
            "--set model.channel_multiplier=0.125 --set training.epochs=1 --quiet",
            fragment,
        )
        for data, fragment in (
            ("TRUNCATED", "train-00000-of-00001: record 3 cannot be read: the shard is truncated or corrupt"),
            ("GARBLED", "train-00000-of-00001: records 2-3 cannot be read: the shard is truncated or corrupt"),
            ("IMAGES", "train-00000-of-00001: record 1 is not a JPEG image (a GIF); re-create the records"),
        )
    ),
    (
        "fit --data-dir RECORDS --model-dir DAMAGED --set input.crop_size=64 --set training.batch_size=2 "
        "--set model.channel_multiplier=0.125 --set training.epochs=1 --quiet",
        "no checkpoint can be restored (1 found",
    ),
    ("evaluate --data-dir RECORDS MISSING --no-progress", "missing"),
    ("evaluate --data-dir RECORDS FILE --no-progress", "file.txt"),
    ("evaluate --data-dir RECORDS UNFINISHED --no-progress", "re-run the same `alexnet-tf fit`"),
    ("evaluate --data-dir MISSING RUN --no-progress", "no such directory"),
    ("evaluate --data-dir RECORDS RUN --batch-size 0", "--batch-size"),
    ("evaluate --data-dir RECORDS RUN --split test --no-progress", "test"),
    ("evaluate --data-dir TRUNCATED RUN --split train --no-progress", "record 3 cannot be read"),
    ("evaluate --data-dir GARBLED RUN --split train --no-progress", "records 2-3 cannot be read"),
    ("evaluate --data-dir IMAGES RUN --no-progress", "validation-00000-of-00001: record 1 is a 20000×20000 JPEG"),
    ("evaluate --data-dir IMAGES RUN --split train --no-progress", "record 1 is not a JPEG image (a GIF)"),
    (
        "evaluate --data-dir RECORDS RUN --fc-device /CPU:1 --no-progress",
        "--fc-device /CPU:1 is for --strategy two-tower",
    ),
    ("evaluate --data-dir RECORDS RUN --strategy multi-worker --no-progress", "TF_CONFIG"),
    ("evaluate --data-dir RECORDS RUN --precision bfloat16 --no-progress", "--precision"),
    ("export MISSING --export-dir NOPARENT/export", "missing"),
    ("export UNFINISHED --export-dir NOPARENT/export", "re-run the same `alexnet-tf fit`"),
    ("export RUN --export-dir FILE --classes RECORDS", "file.txt"),
    ("export RUN --export-dir NOPARENT/export --classes RECORDS --version -1", "--version"),
    ("export RUN --export-dir NOPARENT/export --classes RECORDS --max-pixels 0", "--max-pixels"),
    ("predict MISSING FILE", "missing"),
    ("predict RUN FILE --top-k 0", "--top-k"),
    ("predict RUN FILE --classes RECORDS --max-pixels 0", "--max-pixels"),
    ("demo --data MISSING --workdir NOPARENT/demo --quiet", "missing"),
    ("demo --data FILE --workdir NOPARENT/demo --quiet", "file.txt"),
    ("show-filters MISSING -o NOPARENT/filters.png", "missing"),
    ("show-filters FILE -o NOPARENT/filters.png", "file.txt"),
    ("show-filters RUN -o NOPARENT/filters.png", "cannot write"),
    ("neighbours RUN FILE --data-dir RECORDS -o NOPARENT/n.png", "file.txt"),
    ("neighbours RUN MISSING --data-dir RECORDS -o NOPARENT/n.png", "missing"),
    ("neighbours RUN FILE --data-dir MISSING -o NOPARENT/n.png", "no such directory"),
    ("neighbours MISSING FILE --data-dir RECORDS -o NOPARENT/n.png", "missing"),
    ("plot MISSING -o NOPARENT/curves.png", "missing"),
    ("plot RUN -o NOPARENT/curves.png", "history"),
    ("tune --data-dir MISSING --tune-dir NOPARENT/tune", "no such directory"),
    ("tune --data-dir RECORDS --tune-dir NOPARENT/tune --space MISSING", "missing"),
    ("tune --data-dir RECORDS --tune-dir NOPARENT/tune --strategy multi-worker", "--strategy"),
    ("tune --data-dir RECORDS --tune-dir NOPARENT/tune --set training.nope=1", "training.nope"),
    ("tune --data-dir RECORDS --tune-dir NOPARENT/tune --recipe MISSING", "(demo, finetune, paper)"),
]


@pytest.mark.slow
@pytest.mark.parametrize("line, fragment", BAD_INPUTS, ids=[line.split(" --")[0] for line, _ in BAD_INPUTS])
def test_bad_input_is_one_error_line_and_writes_nothing(world, line, fragment):
    args = []
    for word in line.split():
        for name, path in world.items():
            word = word.replace(name, path) if word.startswith(name) else word
        args.append(word)
    written = os.path.dirname(world["NOPARENT"])
    try:
        result = CliRunner().invoke(main, args)
        created = _final_outputs(written, midway=any(data in line for data in ("TRUNCATED", "GARBLED", "IMAGES")))
    finally:
        shutil.rmtree(written, ignore_errors=True)  # one case's leftovers must not fail the next
    output = result.output
    assert result.exit_code not in (0, None), output
    # An uncaught exception would be a traceback in a terminal; click exits with SystemExit instead.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [text for text in output.splitlines() if text.startswith("Error:")]
    assert len(errors) == 1, output
    assert fragment in errors[0], output
    assert not created, f"final outputs were written: {created}"


@pytest.mark.parametrize(
    "command, args, name, value",
    [
        ("fit", ["--data-dir", "D", "--model-dir", "R", "--recipe", "demo"], "recipe_path", "demo"),
        ("fit", ["--data-dir", "D", "--model-dir", "R", "--pipeline", "demo"], "recipe_path", "demo"),
        ("tune", ["--data-dir", "D", "--tune-dir", "T", "--recipe", "demo"], "recipe_path", "demo"),
        ("tune", ["--data-dir", "D", "--tune-dir", "T", "--pipeline", "demo"], "recipe_path", "demo"),
        ("predict", ["MODEL", "IMAGE", "--top-k", "3"], "top_k", 3),
        ("predict", ["MODEL", "IMAGE", "--top", "3"], "top_k", 3),
        ("export", ["SOURCE", "--export-dir", "E", "--top-k", "3"], "top_k", 3),
    ],
)
def test_one_name_per_flag_and_the_old_one_still_works(command, args, name, value):
    """--recipe names a recipe file (--pipeline, its old name, still works); predict and export
    both say --top-k (predict's old --top still works)."""
    assert main.commands[command].make_context(command, args).params[name] == value


def test_fit_prints_the_next_steps(records, tmp_path):
    """After a finished run, fit names the commands that use it, as demo does; crops much smaller
    than the records (a recipe made for other records) are pointed out first."""
    run = str(tmp_path / "run")
    tiny = ["model.channel_multiplier=0.125", "input.crop_size=64", "training.batch_size=2", "training.epochs=1"]
    result = invoke(["fit", "--data-dir", records, "--model-dir", run, *(f"--set={value}" for value in tiny)])
    assert result.exit_code == 0, result.output
    # 64-pixel crops of 256-pixel records: said once, with the crop size that sees whole images.
    assert "note: input.crop_size=64 crops cover 25% of the 256x256 records' side" in result.output
    assert "set input.crop_size=224" in result.output
    next_steps = result.output[result.output.index("Next:") :]
    for command in (f"evaluate --data-dir {records} {run}", f"plot {run}", f"export {run}", f"predict {run}"):
        assert f"alexnet-tf {command}" in next_steps, result.output
