"""What an existing directory of ImageNet-style TFRecords holds: its shards, schema and class names.

The namings other tools write (all with or without a ``.tfrecord``/``.tfrecords`` suffix):

* TF-Slim ``build_imagenet_data.py`` and Model Garden: ``train-00000-of-01024``,
  ``validation-00000-of-00128`` (Model Garden's ``tfrecord_lib``: ``…-00000-of-00002.tfrecord``);
* other writers: ``valid-…`` or ``val-…`` for the validation split;
* TFDS: ``<name>-<split>.tfrecord-00000-of-01024``, e.g. ``imagenet2012-train.tfrecord-00000-of-01024``,
  beside ``dataset_info.json`` and ``label.labels.txt`` (one class name per line, in label order).

Temporary names (`alexnet_tf.files.is_temporary`) and other hidden files are never shards.
Everything is read through `tf.io.gfile`; nothing here writes.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from typing import Any

import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.files import is_temporary
from alexnet_tf.records import schema

_SUFFIX = r"(?:\.tfrecords?)?"
SHARD_NAME = re.compile(
    rf"^(?P<prefix>.+-)?(?P<alias>train|validation|valid|val){_SUFFIX}-(?P<index>\d+)-of-(?P<count>\d+){_SUFFIX}$"
)
SPLIT_OF_ALIAS = {"train": schema.TRAIN, "validation": schema.VALIDATION, "valid": schema.VALIDATION}
SPLIT_OF_ALIAS["val"] = schema.VALIDATION
TFDS_LABELS_FILE = "label.labels.txt"
TFDS_INFO_FILE = "dataset_info.json"


@dataclasses.dataclass(frozen=True)
class ShardFile:
    name: str
    split: str
    index: int
    count: int  # the N of "-of-N"
    size: int  # bytes


@dataclasses.dataclass(frozen=True)
class ClassNames:
    """Class names found beside the records (TFDS), in label order; empty when there are none."""

    names: tuple[str, ...]
    num_classes: int | None  # from dataset_info.json's ClassLabel, or the names file
    source: str | None  # the file they came from


def find_shards(directory: str) -> tuple[dict[str, list[ShardFile]], list[str]]:
    """The shards of each split in ``directory``, sorted by index, and notes (e.g. gaps).

    Raises `InputError` if the directory is missing, holds no shards, or holds two different
    sets of shards for one split (e.g. ``val-…`` and ``validation-…``).
    """
    if not tf.io.gfile.isdir(directory):
        raise InputError(f"{directory}: no such directory; give the directory that holds the TFRecord shards")
    groups: dict[str, dict[tuple[str, int], list[tuple[str, int]]]] = {}
    for name in tf.io.gfile.listdir(directory):
        name = name.rstrip("/")
        match = SHARD_NAME.match(name)
        if match is None or is_temporary(name) or name.startswith("."):
            continue
        split = SPLIT_OF_ALIAS[match["alias"]]
        key = (name[: match.start("index")], int(match["count"]))  # the set: everything before the index
        groups.setdefault(split, {}).setdefault(key, []).append((name, int(match["index"])))
    if not groups:
        raise InputError(
            f"{directory}: no TFRecord shards found (expected e.g. train-00000-of-01024[.tfrecord], "
            "validation-00000-of-00128, or TFDS's <name>-train.tfrecord-00000-of-01024); give the directory "
            "that holds them"
        )
    shards, notes = {}, []
    for split in schema.SPLITS:
        if split not in groups:
            notes.append(f"no {split} shards found")
            continue
        if len(groups[split]) > 1:
            sets = " and ".join(f"{prefix}…-of-{count}" for prefix, count in sorted(groups[split]))
            raise InputError(f"{directory}: two sets of {split} shards ({sets}); move one set elsewhere")
        (((_, count), found),) = groups[split].items()
        found.sort(key=lambda item: item[1])
        shards[split] = [
            ShardFile(name, split, index, count, tf.io.gfile.stat(posixpath.join(directory, name)).length)
            for name, index in found
        ]
        if len(found) != count:
            missing = sorted(set(range(count)) - {index for _, index in found})
            notes.append(
                f"{split}: {len(found)} of {count} shards present (missing indices e.g. {missing[:3]}); "
                "indexed those present"
            )
    return shards, notes


def read_schema(path: str) -> str:
    """The schema of the shard at ``path``, from its first record; `InputError` if unknown or unreadable."""
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as error:
        raise InputError(f"{path}: not a readable TFRecord file ({error.message.splitlines()[0]})") from None
    if first is None:
        raise InputError(f"{path}: the shard holds no records; remove it or give a complete copy")
    try:
        keys = set(tf.train.Example.FromString(first.numpy()).features.feature)
    except Exception as error:  # noqa: BLE001 - any protobuf decode error means "not an Example"
        raise InputError(f"{path}: the first record is not a tf.train.Example ({type(error).__name__})") from None
    found = schema.detect_schema(keys)
    if found is None:
        raise InputError(
            f"{path}: unknown record schema (keys: {', '.join(sorted(keys)) or 'none'}); expected Model Garden / "
            f"TF-Slim ({schema.ENCODED} + {schema.LABEL}) or TFDS ({schema.TFDS_IMAGE} + {schema.TFDS_LABEL})"
        )
    return found


def read_class_names(directory: str) -> ClassNames:
    """TFDS's class names (``label.labels.txt``) and class count (``dataset_info.json``), if present."""
    names: tuple[str, ...] = ()
    source = None
    labels_path = posixpath.join(directory, TFDS_LABELS_FILE)
    if tf.io.gfile.exists(labels_path):
        with tf.io.gfile.GFile(labels_path, "r") as f:
            names = tuple(line.strip() for line in f.read().splitlines() if line.strip())
        source = TFDS_LABELS_FILE
    num_classes = _info_num_classes(posixpath.join(directory, TFDS_INFO_FILE))
    if num_classes is not None and names and num_classes != len(names):
        raise InputError(
            f"{labels_path}: {len(names)} names but {TFDS_INFO_FILE} says {num_classes} classes; fix or remove one"
        )
    if num_classes is not None:
        source = source or TFDS_INFO_FILE
    return ClassNames(names, num_classes if num_classes is not None else (len(names) or None), source)


def _info_num_classes(path: str) -> int | None:
    """``numClasses`` of the ``label`` feature in TFDS's ``dataset_info.json`` (None if absent)."""
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            info = json.loads(f.read())
    except ValueError as error:
        raise InputError(f"{path}: unreadable JSON ({error}); fix or remove it") from None
    found = _find_class_label(info)
    return int(found["numClasses"]) if found and "numClasses" in found else None


def _find_class_label(node: Any) -> dict[str, Any] | None:
    if isinstance(node, dict):
        label = node.get(schema.TFDS_LABEL)
        if isinstance(label, dict) and isinstance(label.get("classLabel"), dict):
            return label["classLabel"]
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        if (found := _find_class_label(child)) is not None:
            return found
    return None
