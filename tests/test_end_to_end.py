"""The pieces together: image folders → prepare-data → input pipeline → AlexNet that learns."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import AlexNet, paper, synthetic
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.network.layers import with_view_normalization
from alexnet_tf.prepare.convert import PrepareConfig, prepare_dataset

CLASSES = 3


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("e2e")
    synthetic.write_image_folder(str(root / "images"), classes=CLASSES, per_class=12, sizes=((300, 260), (260, 320)))
    report = prepare_dataset(
        PrepareConfig(
            source=str(root / "images"),
            output=str(root / "records"),
            train_shards=3,
            validation_shards=2,
            val_fraction=0.25,
            workers=1,
            progress=False,
        )
    )
    assert report.metadata.splits["validation"].num_records == 9
    return str(root / "records")


def he_initialized(model: keras.Model) -> keras.Model:
    """He-normal kernels, zero biases: the paper's N(0, 0.01) init sits at chance for many epochs
    on a few dozen images (REFERENCE.md, "Learning at small scale"), and this test is about the
    pipeline and the model, not about that plateau."""
    init = keras.initializers.HeNormal(seed=0)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            layer.kernel.assign(init(layer.kernel.shape))
            layer.bias.assign(tf.zeros_like(layer.bias))
    return model


@pytest.mark.parametrize("normalize_in_model", [False, True])
def test_prepared_records_train_a_tiny_alexnet_that_learns(records, normalize_in_model):
    """The float pipeline, and the uint8 views finished by ViewNormalization inside the model:
    a few epochs on 27 images lower the loss, and centre and ten-crop accuracy on the 9
    held-out images are well above chance (1/3)."""
    pipe = InputPipeline(
        InputConfig(records, batch_size=9, seed=0, deterministic=True, normalize_in_model=normalize_in_model)
    )
    alexnet = he_initialized(AlexNet(num_classes=CLASSES, channel_multiplier=0.125, dropout=0.0, seed=0))
    model = with_view_normalization(alexnet, pipe.view_normalization()) if normalize_in_model else alexnet
    model.compile(
        optimizer=keras.optimizers.SGD(1e-4, momentum=paper.MOMENTUM),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(pipe.train_dataset(), steps_per_epoch=pipe.steps_per_epoch(), epochs=8, verbose=0)
    losses = history.history["loss"]
    assert min(losses[-3:]) < losses[0] / 2, losses

    _, center_accuracy = model.evaluate(pipe.eval_dataset(), verbose=0)
    assert center_accuracy >= 7 / 9, center_accuracy
    ten_crop_accuracy, seen = ten_crop_accuracy_of(model, pipe.eval_dataset(ten_crop=True))
    assert seen == 9 and ten_crop_accuracy >= 7 / 9, ten_crop_accuracy


def ten_crop_accuracy_of(model: keras.Model, dataset: tf.data.Dataset) -> tuple[float, int]:
    """§4.1 test time: the softmax averaged over the ten views of each image."""
    correct = seen = 0
    for views, labels in dataset:
        batch = labels.shape[0]
        # The ten views of each image as ten batch entries (every feature has leading [b, 10]).
        flat = tf.nest.map_structure(lambda tensor: tf.reshape(tensor, [-1, *tensor.shape[2:]]), views)
        probabilities = model(flat, training=False)
        averaged = tf.reduce_mean(tf.reshape(probabilities, [batch, paper.TEST_VIEWS, CLASSES]), axis=1)
        correct += int(np.sum(np.argmax(averaged, axis=1) == labels.numpy()))
        seen += batch
    return correct / seen, seen
