"""The pieces together: image folders → prepare-data → input pipeline → AlexNet."""

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import AlexNet, paper
from alexnet_tf.data import synthetic
from alexnet_tf.data.pipeline import InputConfig, eval_dataset, train_dataset
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

    config = InputConfig(str(tmp_path / "records"), batch_size=4, seed=0, deterministic=True)
    model = AlexNet(num_classes=3, input_size=paper.CROP_SIZE, width=0.125, seed=0)
    model.compile(
        optimizer=keras.optimizers.SGD(paper.LEARNING_RATE, momentum=paper.MOMENTUM),
        loss="sparse_categorical_crossentropy",
    )
    history = model.fit(train_dataset(config), steps_per_epoch=2, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    # §4.1 test time: the softmax averaged over the ten views of each image.
    seen = 0
    for views, labels in eval_dataset(config, ten_crop=True):
        batch, ten = views.shape[:2]
        probs = model(tf.reshape(views, [-1, *views.shape[2:]]), training=False)
        averaged = tf.reduce_mean(tf.reshape(probs, [batch, ten, 3]), axis=1)
        np.testing.assert_allclose(tf.reduce_sum(averaged, axis=-1), 1.0, rtol=1e-5)
        assert set(labels.numpy()) <= {0, 1, 2}
        seen += batch
    assert seen == report.metadata.splits["validation"].num_records
