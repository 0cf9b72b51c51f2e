"""The classes a trained model predicts: index → wnid and human-readable name.

The contract with `fit` and prepare-data: a JSON object whose ``classes`` list holds one entry
per output unit, ``{"index": i, "wnid": "n01440764", "name": "tench, Tinca tinca"}``, indices
0..C-1 each exactly once. prepare-data's ``metadata.json`` already has that list; a run
directory records it as ``RUN/classes.json`` (`CLASSES_FILENAME`, the same list and nothing
else that matters here), so a run can be exported without its records at hand.

`load_classes` takes either file, or a directory holding one (a run directory, or a
prepare-data output), and checks the list so that an export never ships names that do not
line up with the model's outputs.
"""

from __future__ import annotations

import json
import posixpath

import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.records.metadata import METADATA_FILENAME, ClassInfo
from alexnet_tf.runs import CLASSES_FILE as CLASSES_FILENAME


def find_classes_file(directory: str) -> str | None:
    """``directory/classes.json`` or else ``directory/metadata.json``, whichever exists first."""
    for name in (CLASSES_FILENAME, METADATA_FILENAME):
        path = posixpath.join(directory, name)
        if tf.io.gfile.exists(path):
            return path
    return None


def load_classes(path: str, num_classes: int | None = None) -> list[ClassInfo]:
    """The classes in ``path`` (a classes.json / metadata.json file, or a directory with one).

    Raises `InputError` when the file is missing or unreadable, when the indices are not
    0..C-1, when a wnid or name is empty or spans lines (they travel as one line each in the
    export's assets), or when C differs from ``num_classes`` (the model's output units).
    """
    if tf.io.gfile.isdir(path):
        found = find_classes_file(path)
        if found is None:
            raise InputError(
                f"{path}: no {CLASSES_FILENAME} or {METADATA_FILENAME}; pass `classes` with one of those files",
                ("classes",),
            )
        path = found
    if not tf.io.gfile.exists(path):
        raise InputError(
            f"{path}: no such file; pass `classes` with a {CLASSES_FILENAME} or {METADATA_FILENAME}", ("classes",)
        )
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            classes = [ClassInfo(**entry) for entry in json.loads(f.read())["classes"]]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"{path}: unreadable class list ({error!r}); expected a JSON object whose 'classes' lists "
            "{'index', 'wnid', 'name'} entries"
        ) from None
    classes.sort(key=lambda c: c.index)
    if [c.index for c in classes] != list(range(len(classes))):
        raise InputError(f"{path}: class indices must be 0..{len(classes) - 1}, each once")
    for c in classes:
        for field, value in (("wnid", c.wnid), ("name", c.name)):
            if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
                raise InputError(f"{path}: class {c.index} has {field}={value!r}; it must be a non-empty single line")
    if num_classes is not None and len(classes) != num_classes:
        raise InputError(
            f"{path}: lists {len(classes)} classes but the model has {num_classes} outputs; "
            "pass the class list of the dataset the model was trained on"
        )
    return classes
