"""The pieces together: image folders → prepare-data → input pipeline → AlexNet."""

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import AlexNet, paper
from alexnet_tf.data import synthetic
from alexnet_tf.data.normalization import with_view_normalization
from alexnet_tf.data.pipeline import InputConfig, Preprocessor, eval_dataset, train_dataset
from alexnet_tf.data.prepare import PrepareConfig, prepare_dataset


def test_prepared_records_train_and_evaluate_a_tiny_alexnet(tmp_path):
    synthetic.write_image_folder(str(tmp_path / "images"), classes=3, per_class=8, sizes=((300, 260), (260, 320)))
    report = prepare_dataset(
        PrepareConfig(
            source=str(tmp_path / "images"),
            output=str(tmp_path / "records"),
            train_shards=3,
            validation_shards=2,
            val_fraction=0.25,
            workers=1,
            progress=False,
        )
    )
    assert report.metadata.num_classes == 3

    records = str(tmp_path / "records")
    validation_records = report.metadata.splits["validation"].num_records
    # The float pipeline, and the uint8 views finished by ViewNormalization inside the model.
    for normalise_in_model in (False, True):
        config = InputConfig(records, batch_size=4, seed=0, deterministic=True, normalise_in_model=normalise_in_model)
        model = AlexNet(num_classes=3, input_size=paper.CROP_SIZE, width=0.125, seed=0)
        if normalise_in_model:
            model = with_view_normalization(model, Preprocessor.from_config(config).view_normalization())
        model.compile(
            optimizer=keras.optimizers.SGD(paper.LEARNING_RATE, momentum=paper.MOMENTUM),
            loss="sparse_categorical_crossentropy",
        )
        history = model.fit(train_dataset(config), steps_per_epoch=2, epochs=1, shuffle=False, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert ten_crop_evaluated(model, eval_dataset(config, ten_crop=True)) == validation_records


def ten_crop_evaluated(model: keras.Model, dataset: tf.data.Dataset) -> int:
    """§4.1 test time: the softmax averaged over the ten views of each image; returns the images seen."""
    seen = 0
    for views, labels in dataset:
        batch = labels.shape[0]
        # The ten views of each image as ten batch entries (every feature has leading [b, 10]).
        flat = tf.nest.map_structure(lambda tensor: tf.reshape(tensor, [-1, *tensor.shape[2:]]), views)
        probs = model(flat, training=False)
        averaged = tf.reduce_mean(tf.reshape(probs, [batch, paper.TEST_VIEWS, 3]), axis=1)
        np.testing.assert_allclose(tf.reduce_sum(averaged, axis=-1), 1.0, rtol=1e-5)
        assert set(labels.numpy()) <= {0, 1, 2}
        seen += batch
    return seen
