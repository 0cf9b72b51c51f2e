"""index-records on tiny records written as Model Garden / TF-Slim and TFDS write them, and the
other direction: our records read with Model Garden's feature spec and file patterns."""

from __future__ import annotations

import collections
import glob
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from alexnet_tf import files, synthetic
from alexnet_tf.cli import main
from alexnet_tf.errors import InputError
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.prepare import index, layout
from alexnet_tf.prepare.images import center_crop, encode_jpeg
from alexnet_tf.prepare.index import IndexConfig, index_records
from alexnet_tf.prepare.stats import PixelStats
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import DatasetMetadata, load_mean_image

# Shorter sides below 512, so Pillow decodes at full scale (no JPEG draft) and the expected
# statistics can be computed independently: full decode, then §2's resize and centre crop.
SIZES = ((300, 200), (200, 260), (320, 240), (256, 256))
WNIDS = ("n01440764", "n01443537", "n01484850")


def _image(rng: np.random.Generator, size: tuple[int, int], label: int) -> bytes:
    tint = (80 * label, 200 - 60 * label, 120)
    return encode_jpeg(synthetic.synthetic_image(rng, size[0], size[1], tint), 90)


def _write(path: str, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def _tfds_example(encoded: bytes, label: int) -> bytes:
    feature = {
        schema.TFDS_IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        schema.TFDS_LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "file_name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x.JPEG"])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _digests(directory: str) -> dict[str, str]:
    return {
        name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
        for name in sorted(os.listdir(directory))
        if os.path.isfile(os.path.join(directory, name))
    }


def _config(records_dir: str, **overrides) -> IndexConfig:
    return IndexConfig(records_dir, **({"workers": 1, "progress": False} | overrides))


@pytest.fixture(scope="module")
def model_garden(tmp_path_factory):
    """Model Garden-style records: 1-based labels, sizes other than 256, ``.tfrecord`` suffixes, and
    a truncated temporary file such as an interrupted writer leaves. Returns (dir, encoded by split)."""
    directory = str(tmp_path_factory.mktemp("model_garden"))
    rng = np.random.default_rng(0)
    written: dict[str, list[tuple[bytes, int]]] = {schema.TRAIN: [], schema.VALIDATION: []}
    plan = {schema.TRAIN: (9, 3), schema.VALIDATION: (3, 1)}
    for split, (count, num_shards) in plan.items():
        shards: list[list[bytes]] = [[] for _ in range(num_shards)]
        for i in range(count):
            label = i % 3 + 1
            encoded = _image(rng, SIZES[i % len(SIZES)], label)
            written[split].append((encoded, label))
            record = schema.serialize_example(
                encoded=encoded, height=0, width=0, label=label, synset=WNIDS[label - 1], text=f"fish {label}",
                filename=f"{split}_{i}.JPEG",
            )  # fmt: skip
            shards[i % num_shards].append(record)
        for k, records in enumerate(shards):
            _write(os.path.join(directory, f"{schema.shard_name(split, k, num_shards)}.tfrecord"), records)
    with open(os.path.join(directory, files.temporary_path("train-00003-of-00003.tfrecord", "dead")), "wb") as f:
        f.write(b"\x00" * 10)  # truncated: a reader that took it for a shard would fail
    return directory, written


@pytest.fixture(scope="module")
def indexed(model_garden):
    directory, _ = model_garden
    before = _digests(directory)
    report = index_records(_config(directory))
    return report, before


@pytest.fixture(scope="module")
def tfds(tmp_path_factory):
    """TFDS-style records (``image`` + ``label``, 0-based, 256×256) with ``label.labels.txt`` and
    ``dataset_info.json``."""
    directory = str(tmp_path_factory.mktemp("tfds"))
    rng = np.random.default_rng(1)
    labels = {schema.TRAIN: [0, 1, 2, 0, 1, 2], schema.VALIDATION: [2, 0, 1]}
    for split, split_labels in labels.items():
        records = [_tfds_example(_image(rng, (256, 256), label), label) for label in split_labels]
        num_shards = 2 if split == schema.TRAIN else 1
        for k in range(num_shards):
            _write(
                os.path.join(directory, f"mydata-{split}.tfrecord-{k:05d}-of-{num_shards:05d}"), records[k::num_shards]
            )
    with open(os.path.join(directory, "label.labels.txt"), "w") as f:
        f.write("cat\ndog\nfish\n")
    info = {
        "name": "mydata",
        "features": {"featuresDict": {"features": {"label": {"classLabel": {"numClasses": "3"}}}}},
    }
    with open(os.path.join(directory, "dataset_info.json"), "w") as f:
        json.dump(info, f)
    return directory, labels


# --- Model Garden / TF-Slim records --------------------------------------------------------------


def test_model_garden_records_are_indexed_in_place(model_garden, indexed):
    directory, written = model_garden
    report, before = indexed
    meta = DatasetMetadata.load(directory)
    assert meta.schema == schema.MODEL_GARDEN and meta.records_dir is None
    assert meta.label_offset == 1 and any("label offset 1 inferred" in note for note in report.notes)
    assert meta.image_size is None  # other sizes: kept, resized by the pipeline
    assert [(c.index, c.wnid, c.name) for c in meta.classes] == [(i, w, f"fish {i + 1}") for i, w in enumerate(WNIDS)]
    assert [s.name for s in meta.splits[schema.TRAIN].shards] == [
        f"train-0000{k}-of-00003.tfrecord" for k in range(3)
    ]  # exact names; the temporary file is not a shard
    assert meta.splits[schema.TRAIN].per_class == dict.fromkeys(WNIDS, 3)
    assert meta.splits[schema.VALIDATION].num_records == 3
    # Never rewritten: every file that was there is byte-identical; only the metadata was added.
    after = _digests(directory)
    assert {name: after[name] for name in before} == before
    assert sorted(set(after) - set(before)) == ["mean_image.npy", "metadata.json"]
    assert not os.path.exists(os.path.join(directory, index.STATE_DIR))


def test_statistics_equal_pixel_stats_over_the_same_images(model_garden, indexed):
    directory, written = model_garden
    expected = PixelStats(256)
    for encoded, _ in written[schema.TRAIN]:
        expected.add(center_crop(Image.open(io.BytesIO(encoded)).convert("RGB"), 256))
    meta = DatasetMetadata.load(directory)
    assert meta.stats == expected.to_dataset_stats()
    np.testing.assert_array_equal(load_mean_image(directory), expected.mean_image())


def test_pipeline_trains_and_evaluates_on_model_garden_records(model_garden, indexed):
    directory, written = model_garden
    pipe = InputPipeline(InputConfig(directory, batch_size=4, shuffle_buffer=16, seed=0, normalize_in_model=False))
    images, labels = next(iter(pipe.train_dataset()))
    assert images.shape == (4, 224, 224, 3) and set(labels.numpy()) <= {0, 1, 2}
    eval_labels = [int(x) for _, batch in pipe.eval_dataset() for x in batch.numpy()]
    assert collections.Counter(eval_labels) == collections.Counter(label - 1 for _, label in written[schema.VALIDATION])
    views, _ = next(iter(pipe.eval_dataset(ten_crop=True)))
    assert views.shape == (3, 10, 224, 224, 3)


def test_a_second_run_is_up_to_date_and_other_metadata_is_refused(model_garden, indexed, tmp_path):
    directory, _ = model_garden
    again = index_records(_config(directory))
    assert again.up_to_date and "nothing to do" in again.summary()
    with pytest.raises(InputError, match="other options"):
        index_records(_config(directory, stats_sample=2))
    ours = str(tmp_path / "ours")
    synthetic.write_synthetic_dataset(ours, train_records=4, train_shards=2, validation_records=2)
    with pytest.raises(InputError, match=r"metadata.json already exists \(written by prepare-data"):
        index_records(_config(ours))


def test_given_label_offset_and_output_elsewhere(model_garden, indexed, tmp_path):
    directory, _ = model_garden
    output = str(tmp_path / "meta")
    report = index_records(_config(directory, output=output, label_offset=0, stats_sample=2))
    meta = report.metadata
    assert meta.records_dir == os.path.abspath(directory) and meta.num_classes == 4  # class 0 has no records
    assert meta.label_offset == 0 and any("1 of 4 classes have no records" in n for n in report.notes)
    assert meta.stats.num_images == 2  # one from each of the first two training shards
    assert sorted(os.listdir(output)) == ["mean_image.npy", "metadata.json"]
    pipe = InputPipeline(InputConfig(output, batch_size=3, seed=0))
    assert pipe.files(schema.VALIDATION) == [
        os.path.join(os.path.abspath(directory), "validation-00000-of-00001.tfrecord")
    ]
    assert sorted(int(x) for _, batch in pipe.eval_dataset() for x in batch.numpy()) == [1, 2, 3]


def test_resume_after_an_interruption_gives_identical_metadata(model_garden, indexed, tmp_path, monkeypatch):
    directory, _ = model_garden
    reference = str(tmp_path / "reference")
    index_records(_config(directory, output=reference))
    output = str(tmp_path / "resumed")
    original, scanned = index.scan_shard, []

    def interrupted(context, task, progress):
        if len(scanned) == 2:
            raise KeyboardInterrupt
        scanned.append(task.name)
        return original(context, task, progress)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(index, "scan_shard", interrupted)
        index_records(_config(directory, output=output))
    assert not os.path.exists(os.path.join(output, "metadata.json"))
    assert os.path.exists(os.path.join(output, index.STATE_DIR, index.CHECKPOINT_FILE))

    def counted(context, task, progress):
        scanned.append(task.name)
        return original(context, task, progress)

    monkeypatch.setattr(index, "scan_shard", counted)
    report = index_records(_config(directory, output=output))
    assert report.resumed_shards == 2 and report.scanned_shards == 2
    assert len(scanned) == len(set(scanned)) == 4  # no shard read twice
    assert report.metadata.to_json() == DatasetMetadata.load(reference).to_json()
    with (
        open(os.path.join(output, "mean_image.npy"), "rb") as a,
        open(os.path.join(reference, "mean_image.npy"), "rb") as b,
    ):
        assert a.read() == b.read()
    assert sorted(os.listdir(output)) == ["mean_image.npy", "metadata.json"]


@pytest.mark.slow
def test_resume_after_kill_9(model_garden, indexed, tmp_path):
    directory, _ = model_garden
    reference = str(tmp_path / "reference")
    index_records(_config(directory, output=reference))
    output = str(tmp_path / "killed")
    harness = textwrap.dedent(
        f"""
        import os, signal
        from alexnet_tf.prepare import index
        index.CHECKPOINT_SECONDS = 0  # checkpoint after every shard
        original, calls = index.scan_shard, []
        def dying(*args):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args)
        index.scan_shard = dying
        index.index_records(index.IndexConfig({directory!r}, output={output!r}, workers=1, progress=False))
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    killed = subprocess.run([sys.executable, "-c", harness], check=False, cwd=repo, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    report = index_records(_config(directory, output=output))
    assert report.resumed_shards == 2 and report.scanned_shards == 2
    assert report.metadata.to_json() == DatasetMetadata.load(reference).to_json()


# --- TFDS records --------------------------------------------------------------------------------


def test_tfds_records_are_indexed_with_their_class_names(tfds, tmp_path):
    directory, labels = tfds
    output = str(tmp_path / "meta")
    report = index_records(_config(directory, output=output, workers=2))
    meta = report.metadata
    assert meta.schema == schema.TFDS and meta.label_offset == 0 and meta.image_size == 256
    assert [c.name for c in meta.classes] == ["cat", "dog", "fish"]
    assert any("label offset 0 inferred" in n and "certain" in n for n in report.notes)
    assert any("label.labels.txt" in n for n in report.notes)
    assert [s.name for s in meta.splits[schema.VALIDATION].shards] == ["mydata-validation.tfrecord-00000-of-00001"]
    pipe = InputPipeline(InputConfig(output, batch_size=2, shuffle_buffer=8, seed=0, normalize_in_model=False))
    images, batch_labels = next(iter(pipe.train_dataset()))
    assert images.shape == (2, 224, 224, 3) and set(batch_labels.numpy()) <= {0, 1, 2}
    assert [int(x) for _, b in pipe.eval_dataset() for x in b.numpy()] == labels[schema.VALIDATION]


def test_a_label_offset_that_makes_a_negative_class_is_refused(tfds, tmp_path):
    directory, _ = tfds
    with pytest.raises(InputError, match="`label_offset=1`: the records hold label 0"):
        index_records(_config(directory, output=str(tmp_path / "meta"), label_offset=1))


# --- Bad input -----------------------------------------------------------------------------------


def test_no_records_or_an_unknown_schema_is_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no TFRecord shards found"):
        index_records(_config(str(empty)))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    example = tf.train.Example(
        features=tf.train.Features(feature={"pixels": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))})
    )
    _write(str(unknown / "train-00000-of-00001"), [example.SerializeToString()])
    result = CliRunner().invoke(main, ["index-records", str(unknown), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "unknown record schema (keys: pixels)" in lines[0]
    assert os.listdir(unknown) == ["train-00000-of-00001"]  # nothing written


def test_shard_namings(tmp_path):
    names = [
        "train-00000-of-00002", "train-00001-of-00002.tfrecord", "val-00000-of-00001.tfrecords",
        files.temporary_path("train-00002-of-00003"), "README", "metadata.json", "test-00000-of-00001",
    ]  # fmt: skip
    for name in names:
        (tmp_path / name).write_bytes(b"")
    shards, notes = layout.find_shards(str(tmp_path))
    assert [s.name for s in shards[schema.TRAIN]] == names[:2]
    assert [s.name for s in shards[schema.VALIDATION]] == [names[2]]
    (tmp_path / "validation-00000-of-00001").write_bytes(b"")
    with pytest.raises(InputError, match="two sets of validation shards"):
        layout.find_shards(str(tmp_path))
    tfds_dir = tmp_path / "tfds"
    tfds_dir.mkdir()
    for name in ("imagenet2012-train.tfrecord-00000-of-00003", "imagenet2012-validation.tfrecord-00000-of-00001"):
        (tfds_dir / name).write_bytes(b"")
    shards, notes = layout.find_shards(str(tfds_dir))
    assert [s.split for found in shards.values() for s in found] == [schema.TRAIN, schema.VALIDATION]
    assert any("1 of 3 shards present" in note for note in notes)


def test_metadata_without_the_new_fields_reads_as_before(tmp_path):
    meta = synthetic.write_synthetic_dataset(str(tmp_path), train_records=2, train_shards=1, validation_records=1)
    raw = json.loads(meta.to_json())
    del raw["schema"], raw["records_dir"]
    old = DatasetMetadata.from_json(json.dumps(raw))
    assert old.schema == schema.MODEL_GARDEN and old.records_dir is None and old == meta


# --- alexnet-tf -> Model Garden ------------------------------------------------------------------


def test_our_records_read_with_model_garden_feature_spec_and_patterns(tmp_path):
    """Model Garden's classification Decoder parses these keys; its ImageNet configs glob train*/valid*."""
    directory = str(tmp_path)
    meta = synthetic.write_synthetic_dataset(
        directory, num_classes=3, train_records=6, train_shards=2, validation_records=3, validation_shards=1,
        label_offset=1,
    )  # fmt: skip
    open(files.temporary_path(os.path.join(directory, "train-00002-of-00003")), "wb").close()
    keys_to_features = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/class/label": tf.io.FixedLenFeature((), tf.int64, default_value=-1),
    }
    for split, pattern in ((schema.TRAIN, "train*"), (schema.VALIDATION, "valid*")):
        paths = sorted(glob.glob(os.path.join(directory, pattern)))
        assert [os.path.basename(p) for p in paths] == [s.name for s in meta.splits[split].shards]
        labels = []
        for record in tf.data.TFRecordDataset(paths):
            parsed = tf.io.parse_single_example(record, keys_to_features)
            assert tf.io.decode_jpeg(parsed["image/encoded"], channels=3).shape == (256, 256, 3)
            labels.append(int(parsed["image/class/label"]))
        assert sorted(labels) == sorted(i % 3 + 1 for i in range(meta.splits[split].num_records))  # 1..N


def test_a_truncated_shard_or_a_bad_flag_is_one_clear_error(model_garden, tmp_path):
    directory, _ = model_garden
    copy = tmp_path / "truncated"
    copy.mkdir()
    with open(os.path.join(directory, "train-00000-of-00003.tfrecord"), "rb") as f:
        data = f.read()
    (copy / "train-00000-of-00001").write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match=r"train-00000-of-00001: truncated or corrupt after record 1"):
        index_records(_config(str(copy), output=str(tmp_path / "meta")))
    result = CliRunner().invoke(main, ["index-records", directory, "--stats-sample", "0"])
    assert result.exit_code == 1 and result.output.strip() == "Error: --stats-sample 0: must be at least 1"
