"""The classes of an imported net: ILSVRC-2012's 1000 synsets, or a list the user gives.

Caffe's ImageNet models (``bvlc_alexnet`` among them) number their 1000 outputs in sorted-wnid
order, the order of Caffe's ``synset_words.txt``, of Kaggle's ``LOC_synset_mapping.txt`` and of
our prepare-data on ImageNet. alexnet-tf ships that list (`ILSVRC2012_FILE`: 1000 lines
``wnid name``, the text of Caffe's ``synset_words.txt``), so ``import-weights`` names the outputs
without any download; ``--classes`` overrides it with a file of the same ``wnid name`` lines
(class i is line i) or with a ``classes.json`` / ``metadata.json`` (e.g. prepare-data's output
for your ImageNet records, which then names the classes exactly as your records do).
"""

from __future__ import annotations

import importlib.resources

import tensorflow as tf

from alexnet_tf.classes import load_classes
from alexnet_tf.errors import InputError
from alexnet_tf.prepare.sources import read_synsets
from alexnet_tf.records.metadata import ClassInfo

ILSVRC2012_FILE = "ilsvrc2012_synsets.txt"


def ilsvrc2012_classes() -> list[ClassInfo]:
    """ILSVRC-2012's 1000 classes, index i the i-th wnid in sorted order, with their names."""
    path = importlib.resources.files(__package__).joinpath(ILSVRC2012_FILE)
    return _from_synsets(str(path), read_synsets(str(path), "classes"))


def read_classes(path: str | None, num_classes: int) -> list[ClassInfo]:
    """The classes of a net with ``num_classes`` outputs: from ``path`` (``wnid name`` lines, or a
    classes.json / metadata.json file or a directory holding one), else ILSVRC-2012's.

    `InputError` when the list's length is not ``num_classes``.
    """
    if path is None:
        classes = ilsvrc2012_classes()
        if len(classes) != num_classes:
            raise InputError(
                f"the net has {num_classes} outputs, not ImageNet's {len(classes)}; pass `classes`: "
                "its classes (lines 'wnid name', or a classes.json)",
                ("classes",),
            )
        return classes
    if path.endswith(".json") or tf.io.gfile.isdir(path):
        return load_classes(path, num_classes=num_classes)
    classes = _from_synsets(path, read_synsets(path, "classes"))
    if len(classes) != num_classes:
        raise InputError(
            f"`classes={path!r}`: lists {len(classes)} classes (distinct wnids) but the net has {num_classes} "
            "outputs; pass the class list the net was trained with",
            ("classes",),
        )
    return classes


def _from_synsets(path: str, names: dict[str, str]) -> list[ClassInfo]:
    classes = [ClassInfo(index=i, wnid=wnid, name=name) for i, (wnid, name) in enumerate(names.items())]
    if not classes:
        raise InputError(f"`classes={path!r}`: no classes; expected lines 'wnid name'", ("classes",))
    return classes
