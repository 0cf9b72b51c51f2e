"""Finding a dataset's images and labels: ILSVRC-2012 or any folder-per-class dataset.

`discover` lists files (through `tf.io.gfile`, so ``gs://`` works) and returns a `Source`: the
classes and, per split, the (path, class) items to convert. It reads no image; bad images are
found and skipped later, by content. Layouts understood (ROOT is the ``source`` argument):

- ``ROOT/train/<class>/<files>`` — ILSVRC-2012 (``<class>`` is a wnid) or your own classes. A
  ROOT with class folders and no ``train/`` is taken as the training folder itself. Kaggle's
  layout (``ROOT/ILSVRC/Data/CLS-LOC/train``, label files in ROOT) is recognised.
- Validation (``val/`` or ``validation/`` beside ``train/``), in one of three forms:
  class folders ``val/<class>/<files>``; flat ``val/<files>`` labelled by Kaggle's
  ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token of PredictionString
  is the wnid; found in ROOT or given as ``val_labels``); or flat with ``val_labels`` a text
  file of one wnid per line, in file-name order. Or ``val_fraction`` of each training class,
  when there is no validation folder.
- Class names from ``LOC_synset_mapping.txt`` in ROOT or ``synsets`` (lines ``wnid name``);
  a class without a name is named by its folder.

Classes are the training folders, sorted by name: class index 0..N-1 (the record label adds the
label offset, see `alexnet_tf.records.schema`). Hidden files and folders (``.DS_Store``,
``._*``) are ignored. Only files directly inside a class folder (or a flat ``val/``) count: a
file beside the class folders is listed as skipped, and a folder inside a class folder is
skipped later as unreadable, with the reason, never silently.

Bad input — a missing or empty directory, a label file naming unknown wnids or images, label
and file counts that disagree — raises `InputError` naming the path and what to do.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import posixpath
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from alexnet_tf import errors
from alexnet_tf.errors import InputError
from alexnet_tf.prepare.streams import Stream
from alexnet_tf.records.metadata import ClassInfo, SkippedFile
from alexnet_tf.records.schema import TRAIN, VALIDATION

SYNSET_MAPPING = "LOC_synset_mapping.txt"
VAL_SOLUTION = "LOC_val_solution.csv"
KAGGLE_IMAGES = "ILSVRC/Data/CLS-LOC"
TRAIN_DIR = "train"
VAL_DIRS = ("val", "validation")
# Listing 1000 class folders on gs:// one by one takes minutes; threads overlap the requests.
_LISTING_THREADS = 16


class SourceItem(NamedTuple):
    """One file to convert: its full path and its 0-based class index."""

    path: str
    class_index: int


@dataclasses.dataclass
class Source:
    """What `discover` found: classes, items per split, files skipped while labelling."""

    classes: list[ClassInfo]
    splits: dict[str, list[SourceItem]]
    skipped: list[SkippedFile]
    validation_labels: str  # how validation labels were obtained, for the summary
    folders: list[str]  # the training and validation folders the files were listed from


def discover(
    root: str,
    *,
    val_labels: str | None = None,
    synsets: str | None = None,
    val_fraction: float = 0.0,
    limit_per_class: int | None = None,
    seed: int = 0,
) -> Source:
    """Lists the dataset under ``root`` (see the module docstring for layouts and rules).

    ``limit_per_class`` keeps a seeded random subset of at most that many files per class in
    each split; ``val_fraction`` moves a seeded random fraction of each training class to the
    validation split.
    """
    root = root.rstrip("/") or "/"
    if not tf.io.gfile.isdir(root):
        raise InputError(f"{root}: no such directory; pass the dataset root (the folder holding train/)")
    images_root = posixpath.join(root, KAGGLE_IMAGES)
    if not tf.io.gfile.isdir(images_root):
        images_root = root
    train_dir, listing = _train_dir(images_root)
    wnids, train, skipped = _training_files(train_dir, listing)
    names = _class_names(root, synsets, wnids)
    classes = [ClassInfo(index=i, wnid=w, name=names.get(w, w)) for i, w in enumerate(wnids)]
    index = {c.wnid: c.index for c in classes}

    val_dir = next((d for d in (posixpath.join(images_root, v) for v in VAL_DIRS) if tf.io.gfile.isdir(d)), None)
    if val_fraction > 0:
        if val_dir is not None:
            raise InputError(
                f"`val_fraction` splits the training folders, but {val_dir} exists; drop `val_fraction` "
                "to use it as the validation split",
                ("val_fraction",),
            )
        train, validation = _split_off(train, val_fraction, seed)
        how = errors.worded(f"`val_fraction={val_fraction}` of each training class", ("val_fraction",))
    elif val_dir is not None:
        validation, how = _validation(val_dir, root, val_labels, index, skipped)
    elif val_labels is not None:
        raise InputError(f"`val_labels={val_labels!r}` given but {images_root} has no val/ folder", ("val_labels",))
    else:
        validation, how = {}, "none (no val/ folder)"

    splits = {TRAIN: _items(train, limit_per_class, seed, TRAIN)}
    if validation:
        splits[VALIDATION] = _items(validation, limit_per_class, seed, VALIDATION)
    folders = [train_dir] + ([val_dir] if val_dir is not None and val_fraction == 0 else [])
    return Source(classes=classes, splits=splits, skipped=skipped, validation_labels=how, folders=folders)


def _training_files(
    train_dir: str, listing: tuple[list[str], list[str]] | None = None
) -> tuple[list[str], dict[int, list[str]], list[dict[str, str]]]:
    """The class folder names, the files per class index, and files outside the class folders.

    ``listing`` is `_folders_and_files` of ``train_dir`` when the caller has it already.
    """
    wnids, loose = listing or _folders_and_files(train_dir)
    if not wnids:
        raise InputError(f"{train_dir}: no class folders; expected {train_dir}/<class>/<image files>")
    class_dirs = [posixpath.join(train_dir, w) for w in wnids]
    train = {}
    for i, (class_dir, files) in enumerate(zip(class_dirs, _list_many(class_dirs), strict=True)):
        if not files:
            raise InputError(f"{class_dir}: empty class folder; add images or remove the folder")
        train[i] = [posixpath.join(class_dir, f) for f in files]
    skipped = [
        SkippedFile(posixpath.join(train_dir, name), TRAIN, "not in a class folder")
        for name in loose
        if name not in (SYNSET_MAPPING, VAL_SOLUTION)
    ]
    return wnids, train, skipped


def _train_dir(images_root: str) -> tuple[str, tuple[list[str], list[str]] | None]:
    """The training folder, and its `_folders_and_files` listing if finding it took one."""
    train_dir = posixpath.join(images_root, TRAIN_DIR)
    if tf.io.gfile.isdir(train_dir):
        return train_dir, None
    listing = _folders_and_files(images_root)
    if listing[0] and not set(listing[0]) & set(VAL_DIRS):
        return images_root, listing  # the root itself holds the class folders
    raise InputError(f"{images_root}: no {TRAIN_DIR}/ folder; expected {images_root}/{TRAIN_DIR}/<class>/<image files>")


def _validation(
    val_dir: str, root: str, val_labels: str | None, index: dict[str, int], skipped: list[SkippedFile]
) -> tuple[dict[int, list[str]], str]:
    """Validation files per class from one of the three label forms."""
    entries = _list(val_dir)
    if not entries:
        raise InputError(f"{val_dir}: empty validation folder; add images or remove the folder")
    if tf.io.gfile.isdir(posixpath.join(val_dir, entries[0])):
        if val_labels is not None:
            raise InputError(
                f"{val_dir} has class folders; `val_labels` is only for a flat validation folder", ("val_labels",)
            )
        return _validation_folders(val_dir, entries, index), "class folders"
    if val_labels is None:
        val_labels = posixpath.join(root, VAL_SOLUTION)
        if not tf.io.gfile.exists(val_labels):
            raise InputError(
                f"{val_dir}: images without class folders and no {VAL_SOLUTION} in {root}; pass "
                "`val_labels=FILE` (LOC_val_solution.csv, or one wnid per line in file-name order)",
                ("val_labels",),
            )
    text = _read_text(val_labels, "val_labels")
    paths = [posixpath.join(val_dir, e) for e in entries]
    if _is_solution_csv(val_labels, text):
        labels = _labels_from_csv(val_labels, text, entries, index)
        for path, entry in zip(paths, entries, strict=True):
            if entry not in labels:
                reason = f"no label in {posixpath.basename(val_labels)}"
                skipped.append(SkippedFile(path, VALIDATION, reason))
    else:
        labels = _labels_from_lines(val_labels, text, entries, val_dir, index)
    validation: dict[int, list[str]] = {}
    for path, entry in zip(paths, entries, strict=True):
        if entry in labels:
            validation.setdefault(labels[entry], []).append(path)
    return validation, posixpath.basename(val_labels)


def _validation_folders(val_dir: str, entries: list[str], index: dict[str, int]) -> dict[int, list[str]]:
    for entry in entries:
        if entry not in index:
            raise InputError(
                f"{val_dir}/{entry}: not a class of the training set; validation class folders must "
                "match the training class folders"
            )
    dirs = [posixpath.join(val_dir, e) for e in entries]
    if not all(_are_dirs(dirs)):
        raise InputError(f"{val_dir}: mixes files and class folders; use one or the other")
    return {
        index[entry]: [posixpath.join(d, f) for f in files]
        for entry, d, files in zip(entries, dirs, _list_many(dirs), strict=True)
        if files
    }


def _is_solution_csv(path: str, text: str) -> bool:
    return path.lower().endswith(".csv") or text.lstrip().lower().startswith("imageid")


def _labels_from_csv(path: str, text: str, entries: list[str], index: dict[str, int]) -> dict[str, int]:
    """Kaggle's ``ImageId,PredictionString`` file -> {file name: class index}."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if "ImageId" not in header or "PredictionString" not in header:
        raise InputError(f"{path}: expected a header 'ImageId,PredictionString' (Kaggle's {VAL_SOLUTION})")
    id_col, prediction_col = header.index("ImageId"), header.index("PredictionString")
    by_name = {e: e for e in entries} | {posixpath.splitext(e)[0]: e for e in entries}
    labels: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        image_id = row[id_col].strip()
        tokens = row[prediction_col].split() if len(row) > prediction_col else []
        if not tokens:
            raise InputError(f"{path}: line {line}: no wnid in PredictionString for {image_id!r}")
        entry = by_name.get(image_id)
        if entry is None:
            raise InputError(f"{path}: line {line}: image {image_id!r} is not in the validation folder")
        if entry in labels:
            raise InputError(f"{path}: line {line}: image {image_id!r} is labelled twice")
        labels[entry] = _class_of(tokens[0], index, path, line)
    return labels


def _labels_from_lines(path: str, text: str, entries: list[str], val_dir: str, index: dict[str, int]) -> dict[str, int]:
    """One wnid per line, in the sorted order of the validation file names."""
    wnids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(wnids) != len(entries):
        raise InputError(
            f"{path}: {len(wnids)} labels for {len(entries)} files in {val_dir}; expected one wnid "
            "per line, in file-name order"
        )
    return {
        entry: _class_of(w, index, path, n) for n, (entry, w) in enumerate(zip(entries, wnids, strict=True), start=1)
    }


def _class_of(wnid: str, index: dict[str, int], path: str, line: int) -> int:
    if wnid in index:
        return index[wnid]
    hint = " (numbers look like the devkit's ILSVRC2012 ids; give wnids instead)" if wnid.isdigit() else ""
    raise InputError(f"{path}: line {line}: unknown wnid {wnid!r}, not a training class folder{hint}")


def _class_names(root: str, synsets: str | None, wnids: list[str]) -> dict[str, str]:
    """{wnid: human-readable name} from ``synsets`` or ``ROOT/LOC_synset_mapping.txt``."""
    path = synsets or posixpath.join(root, SYNSET_MAPPING)
    if synsets is None and not tf.io.gfile.exists(path):
        return {}
    names = read_synsets(path, "synsets")
    if synsets is not None and not set(names) & set(wnids):
        raise InputError(f"{path}: names none of the {len(wnids)} training classes; expected lines 'wnid name'")
    return names


def read_synsets(path: str, parameter: str) -> dict[str, str]:
    """{wnid: name} from a text file of lines ``wnid name`` (``LOC_synset_mapping.txt``,
    Caffe's ``synset_words.txt``), in the file's order; a wnid without a name is its own name.
    ``parameter`` names the argument the file came from in errors."""
    names = {}
    for line in _read_text(path, parameter).splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts:
            names[parts[0]] = parts[1].strip() if len(parts) > 1 else parts[0]
    return names


def _split_off(
    train: dict[int, list[str]], fraction: float, seed: int
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Moves a seeded random ``fraction`` (rounded) of each class to the validation split."""
    kept, moved = {}, {}
    for class_index, paths in train.items():
        order = np.random.default_rng([seed, Stream.VAL_FRACTION, class_index]).permutation(len(paths))
        count = round(fraction * len(paths))
        chosen = set(order[:count].tolist())
        moved[class_index] = [p for i, p in enumerate(paths) if i in chosen]
        kept[class_index] = [p for i, p in enumerate(paths) if i not in chosen]
    if not any(moved.values()):
        raise InputError(f"`val_fraction={fraction}` selects no image from any class; raise it", ("val_fraction",))
    return kept, moved


def _items(per_class: dict[int, list[str]], limit: int | None, seed: int, split: str) -> list[SourceItem]:
    """Items sorted by class then path, at most ``limit`` (a seeded random subset) per class."""
    items = []
    for class_index in sorted(per_class):
        paths = sorted(per_class[class_index])
        if limit is not None and len(paths) > limit:
            stream = Stream.LIMIT_TRAIN if split == TRAIN else Stream.LIMIT_VALIDATION
            keep = np.random.default_rng([seed, stream, class_index]).permutation(len(paths))[:limit]
            paths = [paths[i] for i in sorted(keep.tolist())]
        items.extend(SourceItem(p, class_index) for p in paths)
    return items


def _read_text(path: str, parameter: str) -> str:
    """The text of the file ``path``, given as ``parameter`` (or that parameter's default)."""
    if not tf.io.gfile.exists(path):
        raise InputError(f"`{parameter}={path!r}`: no such file", (parameter,))
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read().decode("utf-8-sig")
    except (tf.errors.OpError, UnicodeDecodeError) as error:
        raise InputError(f"`{parameter}={path!r}`: cannot read it as UTF-8 text ({error})", (parameter,)) from None


def _list(directory: str) -> list[str]:
    """Sorted non-hidden entry names of ``directory`` (gs:// marks folders with a trailing /)."""
    try:
        entries = tf.io.gfile.listdir(directory)
    except tf.errors.OpError as error:
        raise InputError(f"{directory}: cannot list it ({error.message})") from None
    return sorted(e.rstrip("/") for e in entries if not e.startswith("."))


def _list_many(directories: Sequence[str]) -> list[list[str]]:
    with concurrent.futures.ThreadPoolExecutor(_LISTING_THREADS) as pool:
        return list(pool.map(_list, directories))


def _are_dirs(paths: Sequence[str]) -> list[bool]:
    """``tf.io.gfile.isdir`` of each path, on `_LISTING_THREADS` threads (one request each on gs://)."""
    with concurrent.futures.ThreadPoolExecutor(_LISTING_THREADS) as pool:
        return list(pool.map(tf.io.gfile.isdir, paths))


def _folders_and_files(directory: str) -> tuple[list[str], list[str]]:
    """The sorted non-hidden subfolder names and file names of ``directory``."""
    entries = _list(directory)
    is_dir = _are_dirs([posixpath.join(directory, e) for e in entries])
    return [e for e, d in zip(entries, is_dir, strict=True) if d], [
        e for e, d in zip(entries, is_dir, strict=True) if not d
    ]
