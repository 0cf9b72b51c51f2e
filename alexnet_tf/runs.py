"""The run directory: what `alexnet-tf fit` writes and evaluate, export, predict and tune read.

::

    RUN/recipe.yaml        the fully resolved recipe (a resumed run must match it); its
                           training.mixed_precision is what ``auto`` chose (`alexnet_tf.precision`)
    RUN/classes.json       the classes the model predicts: {"classes": [{index, wnid, name}]}
    RUN/checkpoints/       tf.train.CheckpointManager checkpoints (model, optimizer, schedule)
    RUN/best.keras         the model with the best validation top-1 so far
    RUN/last.keras         the model at the end of the last finished epoch
    RUN/history.csv        one row per finished epoch
    RUN/tensorboard/       TensorBoard event files

Both ``.keras`` files are the model on the input pipeline's uint8 views: its first layer is
`alexnet_tf.layers.ViewNormalization`, carrying the dataset's mean, and its last the softmax
``predictions`` layer. See `alexnet_tf.train` for how each file is written.
"""

from __future__ import annotations

import posixpath

import keras
import tensorflow as tf
import yaml

import alexnet_tf.layers  # noqa: F401 - registers the custom layers that load_model reads
from alexnet_tf.errors import InputError

RECIPE_FILE = "recipe.yaml"
CLASSES_FILE = "classes.json"
CHECKPOINTS = "checkpoints"
BEST_MODEL = "best.keras"
LAST_MODEL = "last.keras"
HISTORY = "history.csv"
TENSORBOARD = "tensorboard"


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
    (its custom layers are registered by importing `alexnet_tf.layers`)."""
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
    mapping (`alexnet_tf.train` refuses a garbled one itself)."""
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
