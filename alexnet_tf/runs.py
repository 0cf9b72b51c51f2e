"""The run directory: its one owner. `alexnet-tf fit` writes it through this module; evaluate,
export, predict, tune, show-filters, plot and neighbours read it through this module.

::

    RUN/recipe.yaml        the fully resolved recipe (`record_recipe`: a resumed run must match
                           it); its training.mixed_precision is what ``auto`` chose
                           (`alexnet_tf.training.precision`)
    RUN/classes.json       the classes the model predicts: {"classes": [{index, wnid, name}]}
                           (`write_classes`; read by `alexnet_tf.classes`)
    RUN/checkpoints/       tf.train.CheckpointManager: ckpt-<global step>.{index,data-*},
                           `checkpoint`; model, optimizer (with its momentum slots), epoch, step,
                           data seed, learning-rate schedule state, best validation top-1, its
                           epoch and the current epoch's running sums (`alexnet_tf.training.fit`;
                           recovery from damaged ones: `alexnet_tf.training.checkpoints`)
    RUN/best.keras         the model with the best validation top-1 so far (`save_model`)
    RUN/last.keras         the model at the end of an epoch: the last one once the run has ended,
                           during it at most ``training.last_model_every_seconds`` older
    RUN/history.csv        one row per finished epoch, `HISTORY_FIELDS` (`read_history`,
                           `write_history`; rows kept across resumes)
    RUN/tensorboard/       scalars (loss, top-1/5, lr, images/s; train and validation), a few
                           augmented inputs, the conv1 filters as an image; steps are global
                           steps, so they continue across resumes
    RUN/.alexnet-tf.lock   while a fit runs: one run per directory (`alexnet_tf.locks`)

Both ``.keras`` files are the model on the input pipeline's views: with ``input.normalize_in_model``
(the default) the first layer is `alexnet_tf.network.layers.ViewNormalization` carrying the dataset's
mean and the input is the pipeline's dict of uint8 views; the last layer is the softmax
``predictions``. Every file is written under a temporary name and renamed (`alexnet_tf.files`);
under ``multi-worker`` only the chief writes RUN.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
import yaml

import alexnet_tf.network.layers  # noqa: F401 - registers the custom layers that load_model reads
from alexnet_tf import files, jobs
from alexnet_tf.errors import InputError
from alexnet_tf.recipe import Recipe, with_defaults

RECIPE_FILE = "recipe.yaml"
CLASSES_FILE = "classes.json"
CHECKPOINTS = "checkpoints"
BEST_MODEL = "best.keras"
LAST_MODEL = "last.keras"
HISTORY = "history.csv"
TENSORBOARD = "tensorboard"


# The columns of RUN/history.csv, in order.
HISTORY_FIELDS = ("epoch", "lr", "loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "images_per_sec")
# Everything a run writes, which ``fit --overwrite`` removes.
RUN_FILES = (CHECKPOINTS, TENSORBOARD, BEST_MODEL, LAST_MODEL, HISTORY, RECIPE_FILE, CLASSES_FILE)


def resolve_model_file(source: str) -> str:
    """A ``.keras`` file as given, or a run directory's ``best.keras`` (else ``last.keras``)."""
    if tf.io.gfile.isdir(source):
        for name in (BEST_MODEL, LAST_MODEL):
            path = posixpath.join(source, name)
            if tf.io.gfile.exists(path):
                return path
        if tf.io.gfile.exists(posixpath.join(source, CHECKPOINTS)):
            raise InputError(
                f"{source}: an unfinished run (checkpoints, no {BEST_MODEL} or {LAST_MODEL} yet); "
                "re-run the same `alexnet-tf fit` command to finish it"
            )
        raise InputError(f"{source}: no {BEST_MODEL} or {LAST_MODEL}; pass a run directory of `alexnet-tf fit`")
    if not source.endswith(".keras") or not tf.io.gfile.exists(source):
        raise InputError(f"{source}: not a .keras file or a run directory; pass what `alexnet-tf fit` wrote")
    return source


def load_model(source: str) -> tuple[str, keras.Model]:
    """The resolved ``.keras`` path of ``source`` (`resolve_model_file`) and its model, uncompiled
    (its custom layers are registered by importing `alexnet_tf.network.layers`)."""
    path = resolve_model_file(source)
    try:
        return path, keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError) as error:
        raise InputError(f"{path}: cannot load the model ({error}); pass a .keras file saved by alexnet-tf") from None


def next_steps(data_dir: str, run_dir: str, export_dir: str) -> list[str]:
    """The commands a user runs on a finished run (printed after ``fit`` and ``demo``)."""
    return [
        "Next:",
        f"  alexnet-tf evaluate --data-dir {data_dir} {run_dir} --ten-crop",
        f"  alexnet-tf plot {run_dir} -o curves.png",
        f"  alexnet-tf export {run_dir} --export-dir {export_dir}",
        f"  alexnet-tf predict {run_dir} IMAGE.jpg",
    ]


def read_recorded_recipe(model_dir: str) -> dict | None:
    """The run directory's ``recipe.yaml`` as a dict; None if there is none or it is not a YAML
    mapping (`alexnet_tf.training.fit` refuses a garbled one itself)."""
    path = posixpath.join(model_dir, RECIPE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        recorded = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return recorded if isinstance(recorded, dict) else None


def record_recipe(run_dir: str, recipe: Recipe, allow_change: bool, write: bool) -> None:
    """Compares ``recipe`` with the one the run in ``run_dir`` was started with (`InputError` if
    they differ and not ``allow_change``: `alexnet_tf.jobs.check_options`), then, if ``write``,
    records it as ``RUN/recipe.yaml``."""
    path = posixpath.join(run_dir, RECIPE_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            old = yaml.safe_load(f.read()) or {}
        jobs.check_options(
            with_defaults(old),
            recipe.to_dict(),
            f"{path}: this run was started with another recipe",
            "re-run with the same recipe, `allow_recipe_change=True` to continue with the new one, "
            "or `overwrite=True` to start again",
            ("allow_recipe_change", "overwrite"),
            allow_change,
        )
    if write:
        with files.output_errors(run_dir):
            tf.io.gfile.makedirs(run_dir)
            files.remove_temporaries(run_dir)
        files.write_atomically(path, recipe.to_yaml().encode())


def clear(run_dir: str) -> None:
    """Removes everything a run wrote in ``run_dir`` (`RUN_FILES`), for ``fit --overwrite``."""
    with files.output_errors(run_dir):
        for name in RUN_FILES:
            path = posixpath.join(run_dir, name)
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            elif tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)


def write_classes(run_dir: str, classes: Sequence[Any]) -> None:
    """``RUN/classes.json`` from the dataset's `ClassInfo` records: what export and predict name
    the outputs with (`alexnet_tf.classes`)."""
    document = {"classes": [dataclasses.asdict(info) for info in classes]}
    files.write_atomically(posixpath.join(run_dir, CLASSES_FILE), json.dumps(document, indent=2).encode())


def save_model(run_dir: str, name: str, model: keras.Model) -> None:
    """``RUN/<name>`` (`BEST_MODEL` or `LAST_MODEL`), written atomically."""
    path = posixpath.join(run_dir, name)
    with files.output_errors(path), files.atomic_path(path) as temp:
        model.save(temp)


def copy_model(run_dir: str, source: str, name: str) -> None:
    """``RUN/<name>`` as a copy of ``RUN/<source>`` (both `BEST_MODEL` / `LAST_MODEL`), atomically."""
    path = posixpath.join(run_dir, name)
    with files.output_errors(path), files.atomic_path(path) as temp:
        tf.io.gfile.copy(posixpath.join(run_dir, source), temp, overwrite=True)


def history_path(source: str) -> str:
    """The history CSV of ``source``: a run directory, or the CSV itself."""
    return posixpath.join(source, HISTORY) if tf.io.gfile.isdir(source) else source


def read_history(source: str, columns: Sequence[str] = HISTORY_FIELDS) -> list[dict[str, float]]:
    """The rows of ``source``'s history (`history_path`) with ``columns`` as floats; [] if there
    is none yet; `InputError` naming the file if a column is missing or a value is not a number."""
    path = history_path(source)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        reader = csv.DictReader(f)
        missing = [column for column in columns if column not in (reader.fieldnames or ())]
        if missing:
            raise InputError(f"{path}: not a history of `alexnet-tf fit` (no {', '.join(missing)} column)")
        try:
            return [{column: float(row[column]) for column in columns} for row in reader]
        except (TypeError, ValueError):
            raise InputError(f"{path}: row {reader.line_num} has a missing or non-numeric value") from None


def write_history(run_dir: str, rows: Sequence[Mapping[str, float]]) -> None:
    """``RUN/history.csv`` with one row per finished epoch (`HISTORY_FIELDS`), atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: int(row[key]) if key == "epoch" else row[key] for key in HISTORY_FIELDS})
    files.write_atomically(posixpath.join(run_dir, HISTORY), text.getvalue().encode())
