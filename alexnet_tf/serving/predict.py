"""``alexnet-tf predict``: the top classes of image files, from an export, a run or a ``.keras`` file.

An export (a TF Serving base path, whose newest version is used as TF Serving's default
policy would, or one version directory) is loaded with `tf.saved_model.load` and called
through its ``serving_default`` signature. A run directory or ``.keras`` file is wrapped in the
same `serving.ServingModel` the export is made of, in-process. Either way the image goes
through the serving graph's decoding and evaluation preprocessing, so ``predict`` shows what a
TF Serving client would get.

Images are predicted one request each: a file that is not an image, or one over the pixel
limit (``max_pixels``, refused from its header before decoding), fails its own request only,
and is reported by name while the others are still predicted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from alexnet_tf import errors
from alexnet_tf.constants import DEFAULT_MAX_PIXELS
from alexnet_tf.errors import InputError
from alexnet_tf.serving import serving_model as serving
from alexnet_tf.serving.export import existing_versions, load_serving_model

SAVED_MODEL_FILENAME = "saved_model.pb"

# A batch of encoded images → the serving outputs (`serving.OUTPUT_KEYS`) as tensors.
Classifier = Callable[[tf.Tensor], dict[str, tf.Tensor]]

# The serving graph's pixel-limit error: "... has N pixels to decode, more than the limit of M".
_TOO_MANY_PIXELS = re.compile(rf"has (\d+) {serving.TOO_MANY_PIXELS} (\d+)")


@dataclasses.dataclass(frozen=True)
class ClassScore:
    index: int
    wnid: str
    name: str
    probability: float


@dataclasses.dataclass(frozen=True)
class Prediction:
    path: str
    top: list[ClassScore]


@dataclasses.dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@contextlib.contextmanager
def open_classifier(
    model: str, top_k: int = 5, classes: str | None = None, max_pixels: int | None = None
) -> Iterator[Classifier]:
    """The ``serving_default`` function of an export, or of a run / ``.keras`` file in-process.

    An export lists a fixed number of classes per image (its ``top_k``); asking for more is
    an `InputError`. ``classes`` and ``max_pixels`` (default: prepare-data's limit) apply to
    run directories and ``.keras`` files only: an export has its own.
    """
    version_dir = saved_model_dir(model)
    if version_dir is None:
        with tempfile.TemporaryDirectory() as assets_dir:
            limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
            serving_model = load_serving_model(model, assets_dir, classes, top_k=top_k, max_pixels=limit)
            function, input_signature = serving_model.signatures()[serving.IMAGE_BYTES_SIGNATURE]
            yield tf.function(function, input_signature=input_signature)
        return
    if classes is not None:
        raise InputError(
            f"`classes`: {model} is an export, whose class names are inside it; drop `classes`", ("classes",)
        )
    if max_pixels is not None:
        raise InputError(
            f"`max_pixels`: {model} is an export, whose limit was set when it was exported (its `max_pixels`); "
            "drop `max_pixels`, or export again with another limit",
            ("max_pixels",),
        )
    signature = tf.saved_model.load(version_dir).signatures[serving.IMAGE_BYTES_SIGNATURE]
    available = signature.structured_outputs[serving.TOP_K_INDICES].shape[-1]
    if top_k > available:
        raise InputError(
            f"`top_k={top_k}`: {version_dir} was exported with `top_k={available}`; ask for at most that", ("top_k",)
        )

    def classify(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = signature(**{serving.IMAGE_BYTES_INPUT: image_bytes})
        return {key: value[:, :top_k] if key.startswith("top_k_") else value for key, value in outputs.items()}

    yield classify


def predict_files(classifier: Classifier, paths: Sequence[str]) -> tuple[list[Prediction], list[Failure]]:
    """Each file's top classes; unreadable and non-image files become `Failure` entries."""
    predictions, failures = [], []
    for path in paths:
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read()
        except tf.errors.OpError as error:
            failures.append(Failure(path, f"cannot read it ({error.message})"))
            continue
        try:
            outputs = classifier(tf.constant([data]))
        except tf.errors.InvalidArgumentError as error:
            failures.append(Failure(path, _refusal(error.message)))
            continue
        predictions.append(Prediction(path, _top_classes(outputs)))
    return predictions, failures


def _refusal(message: str) -> str:
    """Why the serving graph refused an image, from its ``InvalidArgument`` message."""
    too_big = _TOO_MANY_PIXELS.search(message)
    if too_big:
        pixels, limit = (int(number) for number in too_big.groups())
        return errors.worded(f"{pixels:,} {serving.TOO_MANY_PIXELS} {limit:,} (`max_pixels`)", ("max_pixels",))
    return "not a JPEG, PNG, GIF or BMP image, or a corrupt one"


def _top_classes(outputs: dict[str, tf.Tensor]) -> list[ClassScore]:
    indices, probabilities, wnids, names = (
        np.asarray(outputs[key])[0]
        for key in (serving.TOP_K_INDICES, serving.TOP_K_PROBABILITIES, serving.TOP_K_WNIDS, serving.TOP_K_NAMES)
    )
    return [
        ClassScore(int(i), w.decode("utf-8"), n.decode("utf-8"), float(p))
        for i, p, w, n in zip(indices, probabilities, wnids, names, strict=True)
    ]


def saved_model_dir(model: str) -> str | None:
    """The SavedModel directory ``model`` names (a version, or a base's newest), else None."""
    if not tf.io.gfile.isdir(model):
        return None
    if tf.io.gfile.exists(posixpath.join(model, SAVED_MODEL_FILENAME)):
        return model
    versions = [posixpath.join(model, str(v)) for v in existing_versions(model)]
    complete = [path for path in versions if tf.io.gfile.exists(posixpath.join(path, SAVED_MODEL_FILENAME))]
    return complete[-1] if complete else None
