"""``alexnet-tf export``: a trained model as a SavedModel version that TensorFlow Serving loads.

Layout (TF Serving's): ``BASE/<version>/`` with ``saved_model.pb``, ``variables/``,
``assets/`` (the class wnids and names, read by lookup tables in the graph) and
``assets.extra/tf_serving_warmup_requests``; tag ``serve``; three signatures
(`alexnet_tf.serving.serving_model`): ``serving_default`` (encoded images), ``image_tensor`` (prepared float
views) and ``tf_example`` (records in prepare-data's schema).

TF Serving polls BASE and loads every new integer directory it sees, so a version is written
under a hidden temporary name (`alexnet_tf.files`: ``.tmp-<id>-version``, which the version
scan ignores) and renamed only when complete: an export killed midway leaves at most a
``.tmp-`` directory, never a half-written version. The version number is claimed by that
rename, which fails if the version exists (`files.rename_unless_exists`); the next number is
then tried, so exports running at once get distinct versions (atomic on local disks only: see
docs/serving.md for ``gs://``). An existing version is replaced only with ``overwrite`` (the
old one is moved aside to a temporary name first, then deleted).

Written with Keras 3's `keras.export.ExportArchive`, the ecosystem's way: it tracks the
layers' variables and the lookup tables' assets for us; each signature is registered as an
endpoint under its final name, so no ``serve`` alias appears.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import files
from alexnet_tf.classes import load_classes
from alexnet_tf.constants import DEFAULT_MAX_PIXELS
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.records import schema
from alexnet_tf.runs import load_model
from alexnet_tf.serving import serving_model as serving
from alexnet_tf.serving import warmup

logger = logging.getLogger(__name__)

# What `fit` writes into a run directory (issue 9): the best model by validation top-1, the last.
DEFAULT_MODEL_NAME = "alexnet"


def load_serving_model(
    source: str,
    assets_dir: str,
    classes: str | None = None,
    top_k: int = 5,
    ten_crop: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> serving.ServingModel:
    """A `serving.ServingModel` for a run directory or ``.keras`` file.

    ``classes`` is a classes.json / metadata.json file or a directory holding one; by default
    the one beside the model file (``RUN/classes.json``).
    """
    path, model = load_model(source)
    network, normalization = serving.inference_parts(model, path)
    classes_path = classes or posixpath.dirname(path)
    class_list = load_classes(classes_path, num_classes=network.output_shape[-1])
    return serving.ServingModel(
        network, normalization, class_list, assets_dir, top_k=top_k, ten_crop=ten_crop, max_pixels=max_pixels
    )


def export_model(
    source: str,
    export_dir: str,
    version: int | None = None,
    overwrite: bool = False,
    ten_crop: bool = False,
    top_k: int = 5,
    classes: str | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> str:
    """Exports a run directory or ``.keras`` file as ``export_dir/<version>``; returns that path.

    Args:
        source: run directory (``best.keras``, else ``last.keras``) or a ``.keras`` file.
        export_dir: TF Serving's model base path.
        version: the version number; None takes the next integer after the existing ones (1
            for a new base path) when the SavedModel is complete (`_install`).
        overwrite: replace an existing ``version`` instead of refusing. Without it nothing is
            ever replaced, also when several exports write to ``export_dir`` at once.
        ten_crop: ``serving_default`` and ``tf_example`` average §4.1's ten views.
        top_k: classes listed per image.
        classes: where the class wnids and names come from (see `load_serving_model`).
        model_name: the model name in the warm-up requests (TF Serving's ``--model_name``).
        max_pixels: the serving graph refuses an encoded image whose header claims more pixels,
            before decoding it (`serving.ServingModel`); default: prepare-data's limit.
    """
    if version is not None and version < 0:
        raise invalid("version", version, "a non-negative integer")
    with files.output_errors(export_dir):
        existing = existing_versions(export_dir) if tf.io.gfile.isdir(export_dir) else []
    if version in existing and not overwrite:  # refused before anything is loaded or written
        version_dir = posixpath.join(export_dir, str(version))
        raise InputError(
            f"{version_dir} exists; pass `overwrite=True` to replace it, or omit `version` for the next one",
            ("overwrite", "version"),
        )

    with tempfile.TemporaryDirectory() as assets_dir:
        # Everything that can refuse the input (model, classes) before anything is written.
        model = load_serving_model(source, assets_dir, classes, top_k=top_k, ten_crop=ten_crop, max_pixels=max_pixels)
        with files.output_errors(export_dir):
            tf.io.gfile.makedirs(export_dir)
            leftovers = [name for name in tf.io.gfile.listdir(export_dir) if files.is_temporary(name)]
        if leftovers:
            logger.warning("%s holds unfinished exports (%s): delete them", export_dir, ", ".join(sorted(leftovers)))
        # The version number is chosen only when the SavedModel is complete (`_install`).
        with files.output_errors(export_dir), files.scratch_path(posixpath.join(export_dir, "version")) as temp:
            _write_saved_model(model, temp)
            _write_warmup_requests(model, temp, model_name)
            return _install(temp, export_dir, version, overwrite)


def _install(temp: str, export_dir: str, version: int | None, overwrite: bool) -> str:
    """Renames the complete SavedModel ``temp`` to its version directory; returns that.

    Without ``version``: the next integer, claimed with `files.rename_unless_exists`; if another
    export takes it first, the one after it is tried, so two exports at once get two versions
    and neither replaces the other. With ``version`` and ``overwrite``: the old version is moved
    aside, the new one renamed in, then the old one deleted (put back if the rename fails).
    """
    if version is None:
        candidate = 0
        while True:
            candidate = max([candidate, *existing_versions(export_dir)]) + 1
            version_dir = posixpath.join(export_dir, str(candidate))
            if files.rename_unless_exists(temp, version_dir):
                return version_dir
    version_dir = posixpath.join(export_dir, str(version))
    replaced = None
    if overwrite and tf.io.gfile.exists(version_dir):
        replaced = files.temporary_path(version_dir)
        tf.io.gfile.rename(version_dir, replaced)
    try:
        installed = files.rename_unless_exists(temp, version_dir)
    except BaseException:
        if replaced is not None:
            tf.io.gfile.rename(replaced, version_dir)  # the new version failed: keep the old one
        raise
    if not installed:
        kept = f" (the version it was to replace is kept as {replaced})" if replaced else ""
        raise InputError(
            f"{version_dir} was written by another export meanwhile; this one was not installed{kept}; "
            "omit `version` to take the next one",
            ("version",),
        )
    if replaced is not None:
        tf.io.gfile.rmtree(replaced)
    return version_dir


def existing_versions(export_dir: str) -> list[int]:
    """The integer version directories under ``export_dir`` (what TF Serving would load)."""
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(export_dir))
    return sorted(int(name) for name in names if name.isdigit())


def _write_saved_model(model: serving.ServingModel, path: str) -> None:
    archive = keras.export.ExportArchive()
    for trackable in model.trackables:
        archive.track(trackable)
    for name, (function, input_signature) in model.signatures().items():
        archive.add_endpoint(name, function, input_signature)
    archive.write_out(path, verbose=False)


def warmup_inputs(model: serving.ServingModel) -> list[tuple[str, dict[str, object]]]:
    """One small request per signature: ``[(signature name, {input key: value})]``.

    The encoded images are a non-square gradient, so the §2 resize is warmed up too; JPEG and
    PNG go through different decoders.
    """
    rows = np.linspace(0, 255, 240, dtype=np.float32)[:, None, None]
    columns = np.linspace(0, 255, 320, dtype=np.float32)[None, :, None]
    image = np.broadcast_to((rows + columns * np.array([0.0, 0.5, 1.0])) / 2, (240, 320, 3)).astype(np.uint8)
    jpeg = tf.io.encode_jpeg(image).numpy()
    png = tf.io.encode_png(image).numpy()
    encoded = tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg]))
    example = tf.train.Example(features=tf.train.Features(feature={schema.ENCODED: encoded}))
    crop = model.crop_size
    return [
        (serving.IMAGE_BYTES_SIGNATURE, {serving.IMAGE_BYTES_INPUT: [jpeg]}),
        (serving.IMAGE_BYTES_SIGNATURE, {serving.IMAGE_BYTES_INPUT: [png]}),
        (serving.IMAGE_TENSOR_SIGNATURE, {serving.IMAGE_TENSOR_INPUT: np.zeros((1, crop, crop, 3), np.float32)}),
        (serving.TF_EXAMPLE_SIGNATURE, {serving.TF_EXAMPLE_INPUT: [example.SerializeToString()]}),
    ]


def _write_warmup_requests(model: serving.ServingModel, path: str, model_name: str) -> None:
    directory = posixpath.join(path, warmup.EXTRA_ASSETS_DIR)
    tf.io.gfile.makedirs(directory)
    records = [warmup.predict_log(model_name, name, inputs) for name, inputs in warmup_inputs(model)]
    warmup.write_warmup_file(posixpath.join(directory, warmup.WARMUP_FILENAME), records)
