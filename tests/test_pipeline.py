"""The tf.data pipeline on tiny synthetic datasets written in prepare-data's format."""

import dataclasses
import json
import logging
import posixpath
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import paper, synthetic
from alexnet_tf.errors import InputError
from alexnet_tf.input import augment, pipeline
from alexnet_tf.input.decode import LABEL
from alexnet_tf.network import layers
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import DatasetMetadata, load_mean_image

CROP = paper.CROP_SIZE
TRAIN_RECORDS = 16  # one class per training record, so labels identify records


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """256×256 records, label_offset 0; 16 train records in 4 shards, 6 validation in 2."""
    directory = str(tmp_path_factory.mktemp("data"))
    synthetic.write_synthetic_dataset(
        directory,
        num_classes=TRAIN_RECORDS,
        train_records=TRAIN_RECORDS,
        train_shards=4,
        validation_records=6,
        validation_shards=2,
    )
    return directory


@pytest.fixture(scope="module")
def model_garden_dir(tmp_path_factory) -> str:
    """Model Garden conventions: labels 1..N, original image geometry."""
    directory = str(tmp_path_factory.mktemp("model_garden"))
    synthetic.write_synthetic_dataset(
        directory, num_classes=4, train_records=8, train_shards=2, validation_records=8, image_size=None, label_offset=1
    )
    return directory


def input_pipeline(directory: str, **options) -> pipeline.InputPipeline:
    """A pipeline of float views unless ``normalize_in_model=True`` is given (the tests of the
    uint8 views say so)."""
    return pipeline.InputPipeline(pipeline.InputConfig(directory, **{"normalize_in_model": False, **options}))


def first_record(directory: str, split: str = schema.TRAIN) -> tf.Tensor:
    return next(iter(tf.data.TFRecordDataset(input_pipeline(directory).files(split)[0])))


def decoded(record: tf.Tensor) -> np.ndarray:
    return tf.io.decode_jpeg(schema.parse_example(record)[schema.ENCODED], channels=3).numpy().astype(np.float32)


def labels_of(dataset: tf.data.Dataset, batches: int | None = None) -> list[int]:
    if batches is not None:
        dataset = dataset.take(batches)
    return [int(label) for _, labels in dataset for label in labels.numpy()]


# --- Single views against NumPy ------------------------------------------------------------------


@pytest.mark.parametrize(
    "mean, strength", [(layers.MEAN_IMAGE, 1.0), (layers.MEAN_CHANNEL, 2.5), (layers.MEAN_NONE, 0.0)]
)
def test_train_view_matches_numpy(data_dir, mean, strength):
    pipe = input_pipeline(data_dir, mean=mean, lighting_strength=strength)
    features = pipe.decoder.parse(first_record(data_dir))
    metadata = DatasetMetadata.load(data_dir)
    stats = metadata.stats
    mean_image = load_mean_image(data_dir)
    record = first_record(data_dir)
    image = decoded(record)
    flips = set()
    for i in range(6):
        seed = tf.constant([11, i], tf.int64)
        view = augment.sample_view(seed, lighting_stddev=paper.PCA_LIGHTING_STD * strength)
        (y, x), flip, alpha = view.offset.numpy(), bool(view.flip), view.alpha.numpy()
        flips.add(flip)
        expected = image[y : y + CROP, x : x + CROP].copy()
        if mean == layers.MEAN_IMAGE:
            expected -= mean_image[y : y + CROP, x : x + CROP]
        elif mean == layers.MEAN_CHANNEL:
            expected -= np.array(stats.mean_rgb)
        # §4.1: add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T (0-255 scale) to every pixel.
        expected += 255.0 * np.array(stats.eigenvectors) @ (alpha * np.array(stats.eigenvalues))
        if flip:
            expected = expected[:, ::-1]
        got = pipe.views.apply(features, pipe.views.sample(seed))
        assert got.shape == (CROP, CROP, 3) and got.dtype == tf.float32
        # Inside the window decode_and_crop_jpeg equals decoding all and slicing; its first and
        # last columns see the crop edge in chroma upsampling (documented in decode_window).
        np.testing.assert_allclose(got[:, 1:-1], expected[:, 1:-1], atol=1e-3)
        np.testing.assert_allclose(got, expected, atol=16)
    assert int(features[LABEL]) == 0
    assert flips == {True, False}


def test_center_view_matches_numpy(data_dir):
    pipe = input_pipeline(data_dir, mean=layers.MEAN_CHANNEL)
    record = first_record(data_dir, schema.VALIDATION)
    got = pipe.views.center(pipe.decoder.parse(record))
    margin = (paper.IMAGE_SIZE - CROP) // 2
    mean_rgb = DatasetMetadata.load(data_dir).stats.mean_rgb
    expected = decoded(record)[margin : margin + CROP, margin : margin + CROP] - mean_rgb
    np.testing.assert_allclose(got[:, 1:-1], expected[:, 1:-1], atol=1e-3)


def test_ten_crop_views_match_numpy_slices(data_dir):
    record = first_record(data_dir, schema.VALIDATION)
    pipe = input_pipeline(data_dir)
    crops = pipe.views.ten_crop(pipe.decoder.parse(record))
    assert crops.shape == (paper.TEST_VIEWS, CROP, CROP, 3)
    image = decoded(record) - load_mean_image(data_dir)
    far, centre = paper.IMAGE_SIZE - CROP, (paper.IMAGE_SIZE - CROP) // 2
    corners = [(0, 0), (0, far), (far, 0), (far, far), (centre, centre)]
    for index in range(paper.TEST_VIEWS):
        y, x = corners[index % 5]
        expected = image[y : y + CROP, x : x + CROP]
        if index >= 5:  # the reflections of the first five
            expected = expected[:, ::-1]
        np.testing.assert_allclose(crops[index], expected, atol=1e-3, err_msg=augment.TEN_CROP_NAMES[index])


# --- Datasets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", pipeline.DTYPES)
def test_train_batches_have_the_requested_dtype(data_dir, dtype):
    images, labels = next(iter(input_pipeline(data_dir, batch_size=4, dtype=dtype).train_dataset()))
    assert images.shape == (4, CROP, CROP, 3) and images.dtype == tf.as_dtype(dtype)
    assert labels.dtype == tf.int32 and all(0 <= label < TRAIN_RECORDS for label in labels.numpy())
    assert np.isfinite(tf.cast(images, tf.float32).numpy()).all()


def test_eval_dataset_is_one_pass_of_center_or_ten_crops(data_dir):
    pipe = input_pipeline(data_dir, batch_size=4)
    center = list(pipe.eval_dataset())
    assert [images.shape[0] for images, _ in center] == [4, 2]  # 6 validation records
    assert center[0][0].shape == (4, CROP, CROP, 3)
    images, labels = next(iter(pipe.eval_dataset(ten_crop=True)))
    assert images.shape == (4, paper.TEST_VIEWS, CROP, CROP, 3) and labels.shape == (4,)


def test_each_epoch_is_a_permutation_with_fresh_views(data_dir):
    pipe = input_pipeline(data_dir, batch_size=TRAIN_RECORDS, deterministic=True, seed=5)
    (first, first_labels), (second, second_labels) = pipe.train_dataset().take(2)
    assert sorted(first_labels.numpy()) == sorted(second_labels.numpy()) == list(range(TRAIN_RECORDS))
    assert not np.array_equal(first_labels, second_labels)  # reshuffled
    for label in range(3):
        a = first.numpy()[list(first_labels.numpy()).index(label)]
        b = second.numpy()[list(second_labels.numpy()).index(label)]
        assert not np.allclose(a, b)  # §4.1: a new crop, flip and alpha on every pass


def test_deterministic_with_a_seed_repeats_batches(data_dir):
    def batches(seed):
        pipe = input_pipeline(data_dir, batch_size=4, deterministic=True, seed=seed)
        return [(images.numpy(), labels.numpy()) for images, labels in pipe.train_dataset().take(3)]

    first, again, other = batches(3), batches(3), batches(4)
    for (a_images, a_labels), (b_images, b_labels) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("normalize_in_model", [False, True])
def test_train_epochs_are_the_seeded_streams_one_after_another(data_dir, normalize_in_model):
    """fit's one dataset for a run (`train_epochs`) is, epoch by epoch, the first batches of
    `train_dataset` with that epoch's seed, the first epoch after its skipped batches; whatever
    TensorFlow's global seed is (0 made the seed pairing fail inside the traced function)."""
    pipe = input_pipeline(data_dir, batch_size=2, deterministic=True, seed=0, normalize_in_model=normalize_in_model)

    def flat(batches):
        return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in batches]

    tf.random.set_seed(0)
    run = flat(pipe.train_epochs([5, 9], batches_per_epoch=3, skip_batches=1))
    expected = flat(pipe.train_dataset(seed=5).skip(1).take(2)) + flat(pipe.train_dataset(seed=9).take(3))
    assert len(run) == 5
    for got, want in zip(run, expected, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, got, want)
    assert not np.array_equal(tf.nest.flatten(run[2])[0], tf.nest.flatten(run[4])[0])  # epochs differ


def test_label_conventions(model_garden_dir):
    expected = sorted(i % 4 for i in range(8))
    zero_based = labels_of(input_pipeline(model_garden_dir, batch_size=4).eval_dataset())
    assert sorted(zero_based) == expected  # metadata's label_offset=1 subtracted
    kept = labels_of(input_pipeline(model_garden_dir, batch_size=4, label_offset=0).eval_dataset())
    assert sorted(kept) == [label + 1 for label in expected]  # Model Garden's 1..N as stored


def test_original_geometry_records_are_resized_as_in_section_2(model_garden_dir):
    pipe = input_pipeline(model_garden_dir, mean=layers.MEAN_NONE, lighting_strength=0)
    record = first_record(model_garden_dir)
    assert decoded(record).shape != (paper.IMAGE_SIZE, paper.IMAGE_SIZE, 3)
    paper_size = augment.resize_and_center_crop(tf.constant(decoded(record).astype(np.uint8))).numpy()
    center = pipe.views.center(pipe.decoder.parse(record))
    np.testing.assert_array_equal(center, paper_size[16 : 16 + CROP, 16 : 16 + CROP])
    images, _ = next(iter(input_pipeline(model_garden_dir, batch_size=4).train_dataset()))
    assert images.shape == (4, CROP, CROP, 3)


@pytest.mark.parametrize("normalize_in_model", [False, True])
def test_skipped_batches_are_not_decoded_and_the_rest_is_unchanged(data_dir, normalize_in_model):
    """A resumed run's stream: ``skip_batches=k`` gives what ``.skip(k)`` gives, same views."""
    pipe = input_pipeline(data_dir, batch_size=4, deterministic=True, seed=9, normalize_in_model=normalize_in_model)
    expected = list(pipe.train_dataset().skip(3).take(3))
    got = list(pipe.train_dataset(skip_batches=3).take(3))
    for (a_views, a_labels), (b_views, b_labels) in zip(expected, got, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a_views, b_views)
        np.testing.assert_array_equal(a_labels, b_labels)


# --- uint8 views for ViewNormalization (normalize_in_model) ---------------------------------------


def model_mode(data_dir: str, **options) -> pipeline.InputPipeline:
    return input_pipeline(data_dir, normalize_in_model=True, **options)


def decoded_by_label(directory: str) -> dict[int, np.ndarray]:
    """Every training image, decoded whole, by label (one class per record in `data_dir`)."""
    files = input_pipeline(directory).files(schema.TRAIN)
    images = {}
    for record in tf.data.TFRecordDataset(files):
        images[int(schema.parse_example(record)[schema.LABEL])] = decoded(record)
    return images


def test_uint8_views_finish_to_the_papers_views(data_dir):
    pipe = model_mode(data_dir, batch_size=TRAIN_RECORDS, seed=7, deterministic=True)
    views, labels = next(iter(pipe.train_dataset()))
    assert views[layers.IMAGE].dtype == tf.uint8 and views[layers.IMAGE].shape == (16, CROP, CROP, 3)
    finished = pipe.view_normalization()(views).numpy()
    images, mean_image = decoded_by_label(data_dir), load_mean_image(data_dir)
    for index, label in enumerate(labels.numpy()):
        (y, x), flip = views[layers.OFFSET][index].numpy(), bool(views[layers.FLIP][index])
        lighting = views[layers.LIGHTING][index].numpy()
        crop = images[label][y : y + CROP, x : x + CROP]
        # The crop is decoded alone (decode_and_crop_jpeg): equal inside, a few levels at its edges.
        np.testing.assert_allclose(views[layers.IMAGE][index][:, 1:-1], crop[:, 1:-1], atol=1e-3)
        expected = views[layers.IMAGE][index].numpy() - (mean_image[y : y + CROP, x : x + CROP] - lighting)
        np.testing.assert_allclose(finished[index], expected[:, ::-1] if flip else expected, atol=1e-3)


def test_uint8_views_draw_the_papers_distribution(data_dir):
    strength = 2.0
    pipe = model_mode(data_dir, batch_size=TRAIN_RECORDS, seed=8, lighting_strength=strength)
    batches = list(pipe.train_dataset().take(40))  # 640 views
    offsets = np.concatenate([views[layers.OFFSET] for views, _ in batches])
    flips = np.concatenate([views[layers.FLIP] for views, _ in batches])
    lighting = np.concatenate([views[layers.LIGHTING] for views, _ in batches])
    positions = paper.IMAGE_SIZE - CROP + 1
    assert set(offsets[:, 0]) == set(offsets[:, 1]) == set(range(positions))  # all 33 corners
    assert 0.4 < flips.mean() < 0.6
    # lighting = 255 V (alpha * lambda): recover alpha ~ N(0, 0.1 * strength) per component.
    stats = DatasetMetadata.load(data_dir).stats
    alpha = (lighting / 255.0) @ np.array(stats.eigenvectors) / np.array(stats.eigenvalues)
    np.testing.assert_allclose(alpha.std(axis=0), paper.PCA_LIGHTING_STD * strength, rtol=0.1)
    np.testing.assert_allclose(alpha.mean(axis=0), 0.0, atol=0.03)
    labels = [labels.numpy() for _, labels in batches[:2]]
    assert sorted(labels[0]) == sorted(labels[1]) == list(range(TRAIN_RECORDS))  # an epoch per batch


def test_uint8_views_are_deterministic_with_a_seed_and_off_without_lighting(data_dir):
    def batches(seed, **options):
        pipe = model_mode(data_dir, batch_size=4, deterministic=True, seed=seed, **options)
        return [{**views, "label": labels} for views, labels in pipe.train_dataset().take(3)]

    first, again, other = batches(3), batches(3), batches(4)
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    image = layers.IMAGE
    assert not all(np.array_equal(a[image], b[image]) for a, b in zip(first, other, strict=True))
    assert not np.any([batch[layers.LIGHTING] for batch in batches(3, lighting_strength=0)])


@pytest.mark.parametrize("ten_crop", [False, True])
def test_uint8_eval_views_finish_to_the_float_views(data_dir, ten_crop):
    in_order = {"batch_size": 4, "deterministic": True, "seed": 0}
    float_batches = input_pipeline(data_dir, **in_order).eval_dataset(ten_crop=ten_crop)
    pipe = model_mode(data_dir, **in_order)
    layer = pipe.view_normalization()
    uint8_batches = pipe.eval_dataset(ten_crop=ten_crop)
    for (views, labels), (images, float_labels) in zip(uint8_batches, float_batches, strict=True):
        assert views[layers.IMAGE].dtype == tf.uint8
        np.testing.assert_array_equal(labels, float_labels)
        np.testing.assert_allclose(layer(views), images, atol=1e-4)


def test_view_normalization_output_follows_the_dtype(data_dir):
    pipe = model_mode(data_dir, batch_size=2, dtype="bfloat16", mean=layers.MEAN_CHANNEL)
    views, _ = next(iter(pipe.train_dataset()))
    assert pipe.view_normalization()(views).dtype == tf.bfloat16


# --- Distribution --------------------------------------------------------------------------------


def contexts(pipelines: int) -> list[tf.distribute.InputContext]:
    return [tf.distribute.InputContext(pipelines, i, pipelines) for i in range(pipelines)]


def assert_partition(shares: list[list[int]], everything: list[int]) -> None:
    assert sorted(label for share in shares for label in share) == sorted(everything)  # covered, no overlap


def test_input_contexts_split_files_without_overlap(data_dir):
    pipe = input_pipeline(data_dir, batch_size=8)  # 4 per replica
    eval_shares = [labels_of(pipe.eval_dataset(schema.TRAIN, input_context=c)) for c in contexts(2)]
    assert [len(share) for share in eval_shares] == [8, 8]
    assert_partition(eval_shares, list(range(TRAIN_RECORDS)))
    # One training epoch per pipeline: 2 shards of 4 records each, 2 batches of 4.
    train_shares = [labels_of(pipe.train_dataset(c), batches=2) for c in contexts(2)]
    assert_partition(train_shares, list(range(TRAIN_RECORDS)))


def test_fewer_files_than_pipelines_shards_records(data_dir, caplog):
    pipe = input_pipeline(data_dir, batch_size=3)  # 1 per replica
    with caplog.at_level(logging.WARNING, logger=pipeline.__name__):
        shares = [labels_of(pipe.eval_dataset(input_context=c)) for c in contexts(3)]
    assert "2 shard files for 3 input pipelines" in caplog.text
    assert_partition(shares, list(range(6)))  # 6 validation records in 2 files
    # Training: 4 files, 5 pipelines; pipeline k keeps records k, k+5, ... of the same order.
    pipe = input_pipeline(data_dir, batch_size=5)
    counts = [len(range(k, TRAIN_RECORDS, 5)) for k in range(5)]
    shares = [labels_of(pipe.train_dataset(c), batches=n) for c, n in zip(contexts(5), counts, strict=True)]
    assert_partition(shares, list(range(TRAIN_RECORDS)))


_TWO_REPLICAS = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.network.layers import IMAGE
data_dir, normalize_in_model = sys.argv[1], sys.argv[2] == "1"
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
pipe = InputPipeline(InputConfig(data_dir, batch_size=8, normalize_in_model=normalize_in_model, seed=0))
distributed = strategy.distribute_datasets_from_function(pipe.train_dataset)
replicas = []
batches = iter(distributed)
for features, labels in (next(batches), next(batches)):
    images = [features[IMAGE] if normalize_in_model else features][0]
    for image, label in zip(strategy.experimental_local_results(images), strategy.experimental_local_results(labels)):
        replicas.append({"device": label.device, "shape": list(image.shape), "labels": label.numpy().tolist()})
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "shares": replicas}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("normalize_in_model", [False, True])
def test_two_replicas_split_each_batch(data_dir, normalize_in_model):
    """Two logical CPUs (a subprocess: devices are fixed when TF starts): each replica gets half
    of every global batch of 8, from its own files, and one epoch covers every record once."""
    run = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS, data_dir, str(int(normalize_in_model))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    shares = result["shares"]
    assert [share["shape"] for share in shares] == [[4, CROP, CROP, 3]] * 4
    assert {share["device"].split("/")[-1] for share in shares} == {"device:CPU:0", "device:CPU:1"}
    # Two steps of 2 × 4 = one epoch of the 16 records: every label once, replicas disjoint.
    assert sorted(label for share in shares for label in share["labels"]) == list(range(TRAIN_RECORDS))


# --- Bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mean": "median"}, "mean='median'"),
        ({"dtype": "float64"}, "dtype='float64'"),
        ({"lighting_strength": -1.0}, "lighting_strength=-1.0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"deterministic": True}, "an integer when deterministic=True"),
    ],
)
def test_bad_config_values_are_named(options, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        pipeline.InputConfig("unused", **options)


def test_bad_directories_and_batch_sizes(data_dir, tmp_path):
    with pytest.raises(InputError, match="metadata.json"):
        input_pipeline(str(tmp_path))
    (tmp_path / "metadata.json").write_text('{"format_version": 1}')
    with pytest.raises(InputError, match="unreadable metadata"):
        input_pipeline(str(tmp_path))
    with pytest.raises(InputError, match="a multiple of the 3 replicas in sync. Received: batch_size=4"):
        input_pipeline(data_dir, batch_size=4).train_dataset(tf.distribute.InputContext(1, 0, 3))
    broken = str(tmp_path / "broken")
    metadata = synthetic.write_synthetic_dataset(
        broken, train_records=2, train_shards=2, validation_records=0, validation_shards=0
    )
    tf.io.gfile.remove(posixpath.join(broken, metadata.splits[schema.TRAIN].shards[1].name))
    with pytest.raises(InputError, match="missing"):
        input_pipeline(broken).train_dataset()
    with pytest.raises(InputError, match="no 'validation' shards"):
        input_pipeline(broken).eval_dataset()


def test_evaluation_needs_no_lighting_statistics(tmp_path):
    """Records without statistics (no PCA) evaluate at the default config; training says what is missing."""
    directory = str(tmp_path / "no_stats")
    metadata = synthetic.write_synthetic_dataset(directory, train_records=4, validation_records=4, validation_shards=1)
    metadata.stats = None
    metadata.save(directory)
    pipe = input_pipeline(directory, batch_size=4)
    assert labels_of(pipe.eval_dataset()) == [0, 1, 2, 3]
    with pytest.raises(InputError, match="no statistics for PCA lighting"):
        pipe.train_dataset()


def test_shards_are_found_by_their_listed_names(tmp_path):
    """Model Garden's tfrecord_lib names shards ``train-00000-of-00002.tfrecord``: whatever the metadata lists."""
    directory = str(tmp_path / "suffixed")
    metadata = synthetic.write_synthetic_dataset(directory, train_records=4, train_shards=2, validation_records=2)
    for info in metadata.splits.values():
        for index, shard in enumerate(info.shards):
            renamed = shard.name + ".tfrecord"
            tf.io.gfile.rename(posixpath.join(directory, shard.name), posixpath.join(directory, renamed))
            info.shards[index] = dataclasses.replace(shard, name=renamed)
    metadata.save(directory)
    assert sorted(labels_of(input_pipeline(directory, batch_size=2).eval_dataset(schema.TRAIN))) == [0, 1, 2, 3]


def test_crops_much_smaller_than_the_records_are_noted(data_dir):
    """The paper's 224 of 256 needs no note; the demo recipe's 112 of 256-pixel records does."""
    assert input_pipeline(data_dir).crop_coverage_note() is None
    note = input_pipeline(data_dir, crop_size=112).crop_coverage_note()
    assert note is not None and "44% of the 256x256" in note and "input.crop_size=224" in note
