"""prepare-data end to end on tiny generated datasets: records, metadata, statistics, resume."""

from __future__ import annotations

import collections
import filecmp
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import files
from alexnet_tf.errors import InputError
from alexnet_tf.prepare import images, resume, shards
from alexnet_tf.prepare.convert import PrepareConfig, prepare_dataset
from alexnet_tf.records import metadata as metadata_lib
from alexnet_tf.records import schema
from tests.tiny_imagenet import NAMES, VAL_FORMS, WNIDS, make_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_records(output: str, split: str) -> list[dict]:
    """Every record of ``split``, parsed, with its shard name and the pixels decoded as TF would."""
    records = []
    for path in sorted(tf.io.gfile.glob(os.path.join(output, schema.shard_glob(split)))):
        for serialized in tf.data.TFRecordDataset(path):
            features = {k: v.numpy() for k, v in schema.parse_example(serialized, full=True).items()}
            features["pixels"] = tf.io.decode_jpeg(features[schema.ENCODED], channels=3).numpy()
            features["shard"] = os.path.basename(path)
            records.append(features)
    return records


def config(source: str, output: str, **overrides) -> PrepareConfig:
    options = {"train_shards": 4, "validation_shards": 2, "workers": 1, "progress": False}
    return PrepareConfig(source=source, output=output, **(options | overrides))


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    """The quirky dataset (folder-form validation) and its prepared output."""
    root = tmp_path_factory.mktemp("quirky")
    data = make_dataset(str(root / "imagenet"))
    output = str(root / "records")
    report = prepare_dataset(config(data.root, output))
    return data, output, report


def test_records_have_the_model_garden_schema_labels_and_names(quirky):
    data, output, report = quirky
    for split, expected in ((schema.TRAIN, data.train), (schema.VALIDATION, data.validation)):
        records = read_records(output, split)
        by_name = {r[schema.FILENAME].decode(): r for r in records}
        assert len(records) == len(by_name) == len(expected)  # no duplicates, nothing lost
        assert set(by_name) == set(expected)
        for name, record in by_name.items():
            wnid = expected[name]
            assert record[schema.SYNSET].decode() == wnid
            assert record[schema.LABEL] == WNIDS.index(wnid)  # label_offset 0: sorted wnids 0..N-1
            assert record[schema.TEXT].decode() == NAMES[wnid]  # from LOC_synset_mapping.txt
            assert record["pixels"].shape == (256, 256, 3)
            assert (record[schema.HEIGHT], record[schema.WIDTH], record[schema.CHANNELS]) == (256, 256, 3)
            assert (record[schema.FORMAT], record[schema.COLORSPACE]) == (b"JPEG", b"RGB")
    assert report.metadata.splits[schema.TRAIN].num_records == len(data.train)


def test_quirky_files_are_converted_or_skipped_with_their_reason(quirky):
    data, output, _ = quirky
    records = {r[schema.FILENAME].decode(): r for r in read_records(output, schema.TRAIN)}
    cmyk = records["n01440764_cmyk.JPEG"]["pixels"]
    # CMYK (10, 200, 30, 0) is RGB (245, 55, 225): decoded by content and converted.
    np.testing.assert_allclose(cmyk.reshape(-1, 3).mean(axis=0), (245, 55, 225), atol=3)
    gray = records["n01484850_gray.JPEG"]["pixels"]
    assert np.abs(gray[..., 0].astype(int) - gray[..., 2]).max() <= 2  # gray stays gray, in 3 channels
    assert "n01443537_png.JPEG" in records  # a PNG named .JPEG
    skipped = metadata_lib.DatasetMetadata.load(output).skipped
    assert {os.path.basename(s.path): s.split for s in skipped} == dict.fromkeys(data.bad, "train")
    for entry in skipped:
        assert data.bad[os.path.basename(entry.path)] in entry.reason
    assert not any(".DS_Store" in s.path for s in skipped)  # hidden files are ignored, not skipped


def test_metadata_matches_the_shards(quirky):
    data, output, _ = quirky
    meta = metadata_lib.DatasetMetadata.load(output)
    assert [(c.index, c.wnid, c.name) for c in meta.classes] == [(i, w, NAMES[w]) for i, w in enumerate(WNIDS)]
    assert meta.label_offset == 0 and meta.image_size == 256
    assert meta.options["jpeg_quality"] == 90 and meta.options["train_shards"] == 4
    for split, expected in ((schema.TRAIN, data.train), (schema.VALIDATION, data.validation)):
        records = read_records(output, split)
        info = meta.splits[split]
        assert info.per_class == collections.Counter(expected.values())
        assert {s.name: s.records for s in info.shards} == collections.Counter(r["shard"] for r in records)
    assert sorted(os.listdir(output)) == sorted(
        ["metadata.json", "mean_image.npy"] + [s.name for split in meta.splits.values() for s in split.shards]
    )  # no temporary or state files left


def test_shards_mix_classes(quirky):
    _, output, _ = quirky
    by_shard = collections.defaultdict(list)
    for record in read_records(output, schema.TRAIN):
        by_shard[record["shard"]].append(record[schema.SYNSET])
    assert len(by_shard) == 4
    assert all(len(set(synsets)) > 1 for synsets in by_shard.values())
    assert all(len(synsets) >= 2 for synsets in by_shard.values())  # 18 files dealt 5, 5, 4, 4; 3 bad


def test_assign_shards_is_deterministic_balanced_and_shuffled():
    items = list(range(103))
    dealt = shards.assign_shards(items, 10, seed=3, stream=0)
    assert dealt == shards.assign_shards(items, 10, seed=3, stream=0)
    assert sorted(x for shard in dealt for x in shard) == items
    assert {len(s) for s in dealt} == {10, 11}
    assert dealt != shards.assign_shards(items, 10, seed=4, stream=0)
    assert dealt[0] != sorted(dealt[0])  # shuffled, not in file order


def test_statistics_equal_numpy_over_the_training_pixels(quirky):
    data, output, _ = quirky
    # The pixels the statistics are defined over: each training file's §2 256×256 crop, as encoded.
    encoded_pixels = []
    for name, wnid in sorted(data.train.items()):
        with open(os.path.join(data.root, "train", wnid, name), "rb") as f:
            prepared = images.prepare_image(f.read(), images.ImageOptions(), for_stats=True)
        encoded_pixels.append(np.asarray(prepared.stats_image))
    pixels = np.stack(encoded_pixels).astype(np.float64)
    meta = metadata_lib.DatasetMetadata.load(output)
    mean_image = metadata_lib.load_mean_image(output)
    np.testing.assert_allclose(mean_image, pixels.mean(axis=0), rtol=1e-6)
    flat = pixels.reshape(-1, 3)
    np.testing.assert_allclose(meta.stats.mean_rgb, flat.mean(axis=0), rtol=1e-12)
    covariance = np.cov(flat / 255.0, rowvar=False, bias=True)
    eigenvalues = np.array(meta.stats.eigenvalues)
    eigenvectors = np.array(meta.stats.eigenvectors)
    np.testing.assert_allclose(eigenvalues, np.linalg.eigvalsh(covariance)[::-1], rtol=1e-9)
    np.testing.assert_allclose(eigenvectors @ np.diag(eigenvalues) @ eigenvectors.T, covariance, atol=1e-12)
    np.testing.assert_allclose(eigenvectors.T @ eigenvectors, np.eye(3), atol=1e-12)
    assert np.all(np.diff(eigenvalues) <= 0) and meta.stats.num_images == len(pixels)
    # What the input pipeline decodes from the records differs from them by JPEG's small error.
    decoded = np.stack([r["pixels"] for r in read_records(output, schema.TRAIN)]).astype(np.float64)
    assert np.abs(decoded.mean(axis=0) - mean_image).mean() < 1.0
    np.testing.assert_allclose(decoded.reshape(-1, 3).mean(axis=0), meta.stats.mean_rgb, atol=2.0)


@pytest.mark.parametrize("form", VAL_FORMS)
def test_the_three_validation_label_forms(tmp_path, form):
    data = make_dataset(str(tmp_path / "imagenet"), per_class=1, val_per_class=3, val_form=form, quirks=False)
    output = str(tmp_path / "records")
    report = prepare_dataset(config(data.root, output, val_labels=data.val_labels))
    records = read_records(output, schema.VALIDATION)
    assert {r[schema.FILENAME].decode(): r[schema.SYNSET].decode() for r in records} == data.validation
    assert len(records) == len(data.validation)
    assert {r[schema.LABEL] for r in records} == {0, 1, 2}
    assert report.metadata.stats.num_images == len(data.train)  # statistics: training split only


def test_val_fraction_limit_per_class_and_label_offset(tmp_path):
    data = make_dataset(str(tmp_path / "own"), per_class=6, val_form=None, quirks=False)
    output = str(tmp_path / "records")
    meta = prepare_dataset(config(data.root, output, val_fraction=0.34, limit_per_class=3, label_offset=1)).metadata
    train = read_records(output, schema.TRAIN)
    validation = read_records(output, schema.VALIDATION)
    assert meta.splits[schema.TRAIN].per_class == dict.fromkeys(WNIDS, 3)  # 4 left after the split, limited to 3
    assert meta.splits[schema.VALIDATION].per_class == dict.fromkeys(WNIDS, 2)  # round(0.34 * 6)
    names = [r[schema.FILENAME] for r in train + validation]
    assert len(names) == len(set(names)) == 15
    assert {r[schema.LABEL] - 1 for r in train} == {0, 1, 2} and meta.label_offset == 1
    assert all(WNIDS[r[schema.LABEL] - 1] == r[schema.SYNSET].decode() for r in train + validation)


def test_keep_geometry_stores_rgb_jpegs_unchanged(tmp_path):
    data = make_dataset(str(tmp_path / "imagenet"), per_class=2, val_form=None)
    output = str(tmp_path / "records")
    meta = prepare_dataset(config(data.root, output, keep_geometry=True)).metadata
    assert meta.image_size is None and meta.stats.num_images == len(data.train)
    for record in read_records(output, schema.TRAIN):
        name = record[schema.FILENAME].decode()
        with open(os.path.join(data.root, "train", data.train[name], name), "rb") as f:
            source = f.read()
        assert record["pixels"].shape == (record[schema.HEIGHT], record[schema.WIDTH], 3)
        if "cmyk" in name or "gray" in name or "png" in name:
            assert record[schema.ENCODED] != source  # re-encoded as RGB JPEG
        else:
            assert record[schema.ENCODED] == source


def test_stats_sample_and_decompression_bombs(tmp_path):
    data = make_dataset(str(tmp_path / "imagenet"), per_class=3, val_form=None, quirks=False)
    output = str(tmp_path / "records")
    meta = prepare_dataset(config(data.root, output, stats_sample=4, max_pixels=100 * 100)).metadata
    too_big = {name for name, (width, height) in data.sizes.items() if width * height > 100 * 100}
    assert too_big and {os.path.basename(s.path) for s in meta.skipped} == too_big
    assert all("decompression bomb refused" in s.reason for s in meta.skipped)
    records = read_records(output, schema.TRAIN)
    assert {r[schema.FILENAME].decode() for r in records} == set(data.train) - too_big
    assert 1 <= meta.stats.num_images <= 4  # the sample, minus sampled files that were refused


def _interrupted_run(monkeypatch, prepare_config: PrepareConfig, calls: int, exception: BaseException) -> None:
    """Runs prepare-data with the image conversion raising ``exception`` on its ``calls``-th call."""
    original, count = images.prepare_image, [0]

    def flaky(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            raise exception
        return original(*args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(type(exception)):
        patch.setattr(images, "prepare_image", flaky)
        prepare_dataset(prepare_config)


def _same_output(a: str, b: str) -> None:
    """Two output directories hold byte-identical shards, mean image and statistics."""
    meta_a, meta_b = metadata_lib.DatasetMetadata.load(a), metadata_lib.DatasetMetadata.load(b)
    names = sorted(s.name for split in meta_a.splits.values() for s in split.shards)
    assert names == sorted(s.name for split in meta_b.splits.values() for s in split.shards)
    _, mismatch, errors = filecmp.cmpfiles(a, b, names + ["mean_image.npy"], shallow=False)
    assert not mismatch and not errors
    assert meta_a.stats == meta_b.stats and meta_a.splits == meta_b.splits and meta_a.skipped == meta_b.skipped


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A small dataset prepared in one uninterrupted run (8 train shards)."""
    root = tmp_path_factory.mktemp("reference")
    data = make_dataset(str(root / "imagenet"), per_class=5, val_per_class=1)
    output = str(root / "records")
    prepare_dataset(config(data.root, output, train_shards=8))
    return data, output


def test_resume_after_ctrl_c_keeps_finished_shards(reference, tmp_path, monkeypatch):
    data, expected = reference
    output = str(tmp_path / "records")
    _interrupted_run(monkeypatch, config(data.root, output, train_shards=8), 9, KeyboardInterrupt())
    # The interrupted shard's temporary file is removed at once; the whole shards stay.
    assert not [n for n in os.listdir(output) if files.is_temporary(n)]
    finished = {n: os.stat(os.path.join(output, n)).st_mtime_ns for n in os.listdir(output) if "-of-" in n}
    assert len(finished) >= 2
    assert not os.path.exists(os.path.join(output, "metadata.json"))

    report = prepare_dataset(config(data.root, output, train_shards=8))
    assert report.resumed_shards == len(finished)
    for name, mtime in finished.items():
        assert os.stat(os.path.join(output, name)).st_mtime_ns == mtime  # not rewritten
    _same_output(output, expected)


def test_shards_finished_after_the_last_checkpoint_are_rewritten(reference, tmp_path, monkeypatch):
    data, expected = reference
    output = str(tmp_path / "records")
    _interrupted_run(monkeypatch, config(data.root, output, train_shards=8), 12, RuntimeError("simulated crash"))
    # As if killed between a shard's rename and the next checkpoint: no checkpoint at all.
    os.remove(os.path.join(output, resume.STATE_DIR, resume.CHECKPOINT_FILE))
    report = prepare_dataset(config(data.root, output, train_shards=8))
    assert report.resumed_shards == 0
    _same_output(output, expected)


@pytest.mark.slow
def test_resume_after_kill_9(reference, tmp_path):
    data, expected = reference
    output = str(tmp_path / "records")
    harness = textwrap.dedent(
        f"""
        import os, signal
        from alexnet_tf.prepare import convert as prepare
        from alexnet_tf.prepare import images
        prepare.CHECKPOINT_SECONDS = 0  # checkpoint after every shard
        original, calls = images.prepare_image, [0]
        def dying(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 10:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        images.prepare_image = dying
        prepare.prepare_dataset(prepare.PrepareConfig(
            source={data.root!r}, output={output!r}, train_shards=8, validation_shards=2, workers=1, progress=False))
        """
    )
    killed = subprocess.run([sys.executable, "-c", harness], check=False, cwd=REPO, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    names = os.listdir(output)
    finished = {
        n: os.stat(os.path.join(output, n)).st_mtime_ns
        for n in names
        if n.endswith("-of-00008") and not files.is_temporary(n)
    }
    # kill -9 leaves the shard in flight under its temporary name, which no train* pattern matches.
    temporaries = [n for n in names if files.is_temporary(n)]
    assert len(finished) >= 2 and temporaries and not any(n.startswith("train") for n in temporaries)

    report = prepare_dataset(config(data.root, output, train_shards=8))
    assert report.resumed_shards == len(finished)
    assert not [n for n in os.listdir(output) if files.is_temporary(n)]
    assert all(os.stat(os.path.join(output, n)).st_mtime_ns == t for n, t in finished.items())
    _same_output(output, expected)


def test_changed_options_or_files_are_refused_unless_overwrite(reference, tmp_path, monkeypatch):
    data, _ = reference
    output = str(tmp_path / "records")
    _interrupted_run(monkeypatch, config(data.root, output, train_shards=8), 5, KeyboardInterrupt())
    with pytest.raises(InputError, match=r"other options \(jpeg_quality: 90 -> 80\)"):
        prepare_dataset(config(data.root, output, train_shards=8, jpeg_quality=80))
    report = prepare_dataset(config(data.root, output, train_shards=8, jpeg_quality=80, overwrite=True))
    assert report.resumed_shards == 0 and report.metadata.options["jpeg_quality"] == 80
    again = prepare_dataset(config(data.root, output, train_shards=8, jpeg_quality=80, workers=2))
    assert again.up_to_date and "nothing to do" in again.summary()
    with pytest.raises(InputError, match="seed: 0 -> 1"):
        prepare_dataset(config(data.root, output, train_shards=8, jpeg_quality=80, seed=1))


def test_a_changed_file_list_is_refused_on_resume(tmp_path, monkeypatch):
    data = make_dataset(str(tmp_path / "imagenet"), per_class=3, val_form=None, quirks=False)
    output = str(tmp_path / "records")
    _interrupted_run(monkeypatch, config(data.root, output), 4, KeyboardInterrupt())
    os.remove(os.path.join(data.root, "train", WNIDS[0], f"{WNIDS[0]}_0.JPEG"))
    with pytest.raises(InputError, match="changed since the interrupted run"):
        prepare_dataset(config(data.root, output))


@pytest.mark.slow
def test_parallel_workers_write_the_same_shards(reference, tmp_path):
    data, expected = reference
    output = str(tmp_path / "records")
    prepare_dataset(config(data.root, output, train_shards=8, workers=2))
    _same_output(output, expected)


def test_a_smaller_image_size_is_stored_and_recorded(reference, tmp_path):
    """``image_size`` (a named deviation from §2's 256): every record, the mean image and the
    metadata have the chosen side, and the input pipeline reads it."""
    from alexnet_tf.input.pipeline import InputConfig, InputPipeline

    data, _ = reference
    output = str(tmp_path / "small")
    report = prepare_dataset(config(data.root, output, image_size=72))
    assert report.metadata.image_size == 72
    assert metadata_lib.load_mean_image(output).shape == (72, 72, 3)
    for path in tf.io.gfile.glob(os.path.join(output, "train-*")):
        for record in tf.data.TFRecordDataset(path):
            features = schema.parse_example(record)
            assert tf.io.decode_jpeg(features[schema.ENCODED]).shape == (72, 72, 3)
    views, _ = next(iter(InputPipeline(InputConfig(output, batch_size=2, crop_size=64)).train_dataset()))
    assert views["image"].shape == (2, 64, 64, 3)
    with pytest.raises(InputError, match=r"`image_size` must be at least 64. Received: image_size=32"):
        config(data.root, output, image_size=32)
