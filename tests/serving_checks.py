"""Checks of an exported SavedModel, run in a fresh process by `tests/test_export.py`.

Loading is the point: nothing of the exporting process (registered Keras classes, traced
functions, Python objects) can help the SavedModel here. Each command prints one JSON object.

    python -m tests.serving_checks compare KERAS_FILE CENTRE_EXPORT TEN_CROP_EXPORT RECORDS SQUARE_RECORDS IMAGE…
    python -m tests.serving_checks warmup EXPORT
    python -m tests.serving_checks bad-batch EXPORT IMAGE
    python -m tests.serving_checks wrong-shapes EXPORT
    python -m tests.serving_checks hostile EXPORT NORMAL_IMAGE IMAGE…
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from PIL import Image
from tensorflow.core.framework import tensor_pb2

from alexnet_tf.input import augment
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.network.layers import FLIP, IMAGE, LIGHTING, OFFSET, ViewNormalization
from alexnet_tf.records import schema

IMAGE_SIZE, CROP = 256, 224


def compare(
    keras_file: str, centre_export: str, ten_export: str, records_dir: str, square_records_dir: str, *images: str
) -> dict:
    """Max |serving - evaluation| of the probabilities, per input and view kind.

    Evaluation is the input pipeline's own eval dataset (uint8 views) through the Keras model on
    views, for the JPEG records of ``records_dir`` (varied sizes) and ``square_records_dir``
    (256×256, as prepare-data writes them by default); for image files it is the same view layout
    cut from pixels decoded by Pillow (PNG) or `tf.io.decode_jpeg` (JPEG, as the pipeline
    decodes), since prepare-data stores every image as RGB JPEG.
    """
    import keras

    import alexnet_tf.network.layers  # noqa: F401 - registers the custom layers for load_model

    model = keras.saving.load_model(keras_file, compile=False)
    result = {}
    for kind, export in (("centre", centre_export), ("ten", ten_export)):
        ten_crop = kind == "ten"
        loaded = tf.saved_model.load(export)
        for name, directory in (("records", records_dir), ("square_records", square_records_dir)):
            records = [
                r.numpy() for r in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(f"{directory}/validation-*")))
            ]
            spec = {schema.ENCODED: tf.io.FixedLenFeature([], tf.string)}
            encoded = tf.io.parse_example(tf.constant(records), spec)[schema.ENCODED]
            config = InputConfig(directory, batch_size=len(records), normalize_in_model=True)
            ((views, _),) = list(InputPipeline(config).eval_dataset(ten_crop=ten_crop))
            expected = _model_probabilities(model, views)
            by_bytes = loaded.signatures["serving_default"](image_bytes=encoded)
            by_example = loaded.signatures["tf_example"](examples=tf.constant(records))
            result[f"{name}/{kind}/serving_default"] = _difference(by_bytes["probabilities"], expected)
            result[f"{name}/{kind}/tf_example"] = _difference(by_example["probabilities"], expected)
            result[f"{name}/{kind}/top_k"] = _top_k_consistent(by_bytes, expected)
            result[f"{name}/{kind}/spread"] = float((expected.max(axis=0) - expected.min(axis=0)).max())
        for path in images:
            data = _read(path)
            image_views = _views(_pixels(path, data), ten_crop)
            got = loaded.signatures["serving_default"](image_bytes=tf.constant([data]))
            result[f"{path}/{kind}"] = _difference(got["probabilities"], _model_probabilities(model, image_views))
            if not ten_crop:
                # The prepared view (ViewNormalization's output) through the image_tensor signature.
                flat = {key: value[0] for key, value in image_views.items()}
                normalization = next(layer for layer in model.layers if isinstance(layer, ViewNormalization))
                got = loaded.signatures["image_tensor"](images=normalization(flat))
                expected = _model_probabilities(model, image_views)
                result[f"{path}/image_tensor"] = _difference(got["probabilities"], expected)
    return result


def warmup(export: str) -> dict:
    """Parses the warm-up file with a descriptor built here, runs each request, reports it."""
    prediction_log = _prediction_log_class()
    loaded = tf.saved_model.load(export)
    requests = []
    for raw in tf.data.TFRecordDataset(f"{export}/assets.extra/tf_serving_warmup_requests"):
        log = prediction_log.FromString(raw.numpy())
        request = log.predict_log.request
        inputs = {
            entry.key: tf.make_ndarray(tensor_pb2.TensorProto.FromString(entry.value)) for entry in request.inputs
        }
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        requests.append(
            {
                "model": request.model_spec.name,
                "signature": request.model_spec.signature_name,
                "has_version": request.model_spec.HasField("version"),
                # Every byte accounted for by the fields above (nothing unknown or malformed).
                "reencodes_identically": log.SerializeToString(deterministic=True) == raw.numpy(),
                "inputs": sorted(inputs),
                "batch": int(outputs["probabilities"].shape[0]),
            }
        )
    return {"requests": requests}


def bad_batch(export: str, image: str) -> dict:
    """Serves [image, not-an-image, image] and [image, half of image]: error type and message of each."""
    data = _read(image)
    signature = tf.saved_model.load(export).signatures["serving_default"]
    result = {}
    for name, batch in (
        ("not_an_image", [data, b"this is not an image", data]),
        ("truncated", [data, data[: len(data) // 2]]),
    ):
        try:
            signature(image_bytes=tf.constant(batch))
            result[name] = {"error": None}
        except tf.errors.OpError as error:
            result[name] = {"error": type(error).__name__, "message": error.message}
    return result


def wrong_shapes(export: str) -> dict:
    """Feeds ``image_tensor`` views of the declared shape and of others: the error of each."""
    signature = tf.saved_model.load(export).signatures["image_tensor"]
    result = {}
    for shape in ([2, CROP, CROP, 3], [1, 96, 96, 3], [9, 96, 96, 3], [1, 113, 112, 3], [1, CROP, CROP, 4]):
        try:
            outputs = signature(images=tf.zeros(shape))
            result[str(shape)] = {"error": None, "batch": int(outputs["probabilities"].shape[0])}
        except tf.errors.OpError as error:
            result[str(shape)] = {"error": type(error).__name__, "message": error.message}
    return result


def hostile(export: str, normal: str, *images: str) -> dict:
    """Serves each image alone after a warm-up with ``normal``: the outcome, the seconds it took and
    the growth of the process's peak RSS (MB).

    The address space is capped at its size after the warm-up plus 2 GiB, so an image that needs
    gigabytes fails here (``ResourceExhausted``) instead of taking the test machine's memory.
    """
    import resource

    signature = tf.saved_model.load(export).signatures["serving_default"]
    for path in (normal, normal):  # the second call runs with everything allocated and traced
        signature(image_bytes=tf.constant([_read(path)]))
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + 2 * 1024**3, resource.RLIM_INFINITY))
    result = {}
    for path in images:
        data = _read(path)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.monotonic()
        try:
            outputs = signature(image_bytes=tf.constant([data]))
            outcome = {"error": None, "top_k_names": [n.decode() for n in outputs["top_k_names"].numpy()[0]]}
        except tf.errors.OpError as error:
            outcome = {"error": type(error).__name__, "message": error.message}
        outcome["seconds"] = time.monotonic() - start
        outcome["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
        result[path] = outcome
    return result


# --- Helpers ---------------------------------------------------------------------------------


def _read(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _pixels(path: str, data: bytes) -> np.ndarray:
    if path.lower().endswith((".jpg", ".jpeg")):
        return tf.io.decode_jpeg(data, channels=3).numpy()
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _views(pixels: np.ndarray, ten_crop: bool) -> dict[str, tf.Tensor]:
    """The pipeline's eval views of one image: §2 square, then the centre or the ten patches."""
    square = augment.resize_and_center_crop(tf.constant(pixels), IMAGE_SIZE)
    if ten_crop:
        patches = augment.five_crop(square, CROP)
        image = tf.concat([patches, patches], 0)
        offsets = tf.constant(augment.ten_crop_offsets(IMAGE_SIZE, CROP) * 2, tf.int32)
        flips = tf.constant([False] * 5 + [True] * 5)
    else:
        offsets = augment.center_offset(IMAGE_SIZE, CROP)[tf.newaxis]
        image = augment.crop_window(square, offsets[0], CROP)[tf.newaxis]
        flips = tf.constant([False])
    return {
        IMAGE: image[tf.newaxis],
        OFFSET: offsets[tf.newaxis],
        FLIP: flips[tf.newaxis],
        LIGHTING: tf.zeros([1, len(flips), 3]),
    }


def _model_probabilities(model, views: dict[str, tf.Tensor]) -> np.ndarray:
    """The Keras model on views ``[b, v, …]`` (or ``[b, …]``), softmax averaged over the views."""
    if views[FLIP].shape.rank == 1:  # the pipeline's centre views: one per image
        views = {key: value[:, tf.newaxis] for key, value in views.items()}
    batch, count = views[FLIP].shape
    flat = {key: tf.reshape(value, [batch * count, *value.shape[2:]]) for key, value in views.items()}
    outputs = model(flat, training=False).numpy()
    return outputs.reshape(batch, count, -1).mean(axis=1)


def _difference(got: tf.Tensor, expected: np.ndarray) -> dict:
    got = got.numpy()
    return {"shape": list(got.shape), "dtype": got.dtype.name, "max_abs": float(np.abs(got - expected).max())}


def _top_k_consistent(outputs: dict[str, tf.Tensor], expected: np.ndarray) -> bool:
    k = outputs["top_k_indices"].shape[1]
    order = np.argsort(-expected, axis=1)[:, :k]
    names = [[f"class {i}".encode() for i in row] for row in order]
    return bool((outputs["top_k_indices"].numpy() == order).all() and (outputs["top_k_names"].numpy() == names).all())


def _prediction_log_class():
    """``tensorflow.serving.PredictionLog`` with only the fields the warm-up writes, built here.

    Wire-compatible with the real messages: a map is a repeated key/value message, and the
    ``TensorProto`` is read as bytes and parsed with TensorFlow's own class.
    """
    file = descriptor_pb2.FileDescriptorProto(name="warmup_check.proto", package="check", syntax="proto3")
    string, int64, message, raw = (descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                                   descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                                   descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                                   descriptor_pb2.FieldDescriptorProto.TYPE_BYTES)  # fmt: skip
    layout = {
        "Int64Value": [("value", 1, int64, None)],
        "ModelSpec": [("name", 1, string, None), ("version", 2, message, "Int64Value"),
                      ("signature_name", 3, string, None)],
        "InputsEntry": [("key", 1, string, None), ("value", 2, raw, None)],
        "PredictRequest": [("model_spec", 1, message, "ModelSpec"), ("inputs", 2, message, "InputsEntry")],
        "PredictLog": [("request", 1, message, "PredictRequest")],
        "PredictionLog": [("predict_log", 6, message, "PredictLog")],
    }  # fmt: skip
    for name, fields in layout.items():
        proto = file.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            repeated = (name, field_name) == ("PredictRequest", "inputs")
            proto.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                if repeated
                else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                type_name=f".check.{type_name}" if type_name else None,
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("check.PredictionLog"))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    checks = {
        "compare": compare,
        "warmup": warmup,
        "bad-batch": bad_batch,
        "wrong-shapes": wrong_shapes,
        "hostile": hostile,
    }
    print(json.dumps(checks[command](*arguments)))
