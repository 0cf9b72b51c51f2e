"""The dataset metadata file written beside the shards, shared by writer and reader.

``metadata.json`` holds the classes, per-split counts and shards, skipped files, the options
that produced the records, and the training set's statistics (§2 mean activity, §4.1 RGB PCA).
The mean image (``image_size × image_size × 3`` float32, 0–255 scale) lives beside it in
``mean_image.npy``. The shards are beside both, unless ``records_dir`` names their directory
(``alexnet-tf index-records --output`` for a read-only records directory); ``schema`` says
which `alexnet_tf.records.schema` the records use. Both fields are optional in the file, so
metadata written before they existed reads as before (our own schema, shards beside it).
All I/O goes through `tf.io.gfile`, so ``gs://`` directories work.
"""

from __future__ import annotations

import dataclasses
import io
import json
import posixpath
import reprlib
import types
import typing
from typing import Any

import numpy as np
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.files import write_atomically
from alexnet_tf.records.schema import MODEL_GARDEN

METADATA_FILENAME = "metadata.json"
MEAN_IMAGE_FILENAME = "mean_image.npy"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    index: int  # 0-based class index; the record label is index + label_offset.
    wnid: str  # WordNet id for ImageNet, the folder name for other datasets.
    name: str  # human-readable name (the wnid when none is known).


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A source file that is not in the records, and why (unreadable, unlabelled, ...)."""

    path: str
    split: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    name: str
    records: int


@dataclasses.dataclass
class SplitInfo:
    num_records: int
    per_class: dict[str, int]  # wnid -> records
    shards: list[ShardInfo]


@dataclasses.dataclass
class DatasetStats:
    """Training-set pixel statistics, computed from the data.

    ``mean_rgb`` (and the mean image file) are on the 0–255 scale. ``eigenvalues`` and
    ``eigenvectors`` decompose the 3×3 covariance of RGB values scaled to [0, 1]: §4.1's
    formula adds ``p_i * alpha_i * lambda_i``, which depends on the pixel scale, and [0, 1] is
    the scale on which the field uses it (ImageNet's eigenvalues are about 0.2, 0.02, 0.005,
    giving shifts of a few 0–255 levels). ``eigenvectors`` has the eigenvectors as its
    *columns* (NumPy's ``eigh`` convention), ordered by descending eigenvalue, so the lighting
    offset on the 0–255 scale is ``255 * eigenvectors @ (alpha * eigenvalues)``.
    """

    mean_rgb: list[float]
    eigenvalues: list[float]
    eigenvectors: list[list[float]]
    num_images: int  # images the statistics were computed over (bounded by --stats-sample).


@dataclasses.dataclass
class DatasetMetadata:
    classes: list[ClassInfo]
    splits: dict[str, SplitInfo]
    label_offset: int = 0
    image_size: int | None = 256  # None: records keep the original geometry.
    stats: DatasetStats | None = None
    skipped: list[SkippedFile] = dataclasses.field(default_factory=list)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema: str = MODEL_GARDEN  # alexnet_tf.records.schema.SCHEMAS
    records_dir: str | None = None  # the shards' directory; None: beside metadata.json
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetMetadata:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON object expected, not {type(raw).__name__}")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"unsupported metadata format_version={raw.get('format_version')!r}; "
                f"expected {FORMAT_VERSION}: re-run prepare-data"
            )
        _check_types(raw, cls, "")
        splits = {
            name: SplitInfo(
                num_records=s["num_records"],
                per_class=dict(s["per_class"]),
                shards=[ShardInfo(**shard) for shard in s["shards"]],
            )
            for name, s in raw["splits"].items()
        }
        stats = DatasetStats(**raw["stats"]) if raw.get("stats") else None
        return cls(
            classes=[ClassInfo(**c) for c in raw["classes"]],
            splits=splits,
            label_offset=raw["label_offset"],
            image_size=raw["image_size"],
            stats=stats,
            skipped=[SkippedFile(**entry) for entry in raw["skipped"]],
            options=dict(raw["options"]),
            schema=raw.get("schema", MODEL_GARDEN),
            records_dir=raw.get("records_dir"),
            format_version=raw["format_version"],
        )

    def shards_dir(self, directory: str) -> str:
        """Where the shards are, for metadata loaded from ``directory``."""
        return self.records_dir or directory

    def save(self, directory: str) -> None:
        """Writes ``metadata.json`` atomically (`alexnet_tf.files.write_atomically`)."""
        write_atomically(metadata_path(directory), self.to_json().encode("utf-8"))

    @classmethod
    def load(cls, directory: str) -> DatasetMetadata:
        """Reads ``directory/metadata.json``; `InputError` naming the file if it is missing or bad."""
        path = metadata_path(directory)
        if not tf.io.gfile.isdir(directory):
            problem = "not a directory" if tf.io.gfile.exists(directory) else "no such directory"
            raise InputError(f"{directory}: {problem}; give the directory that prepare-data or index-records wrote")
        if not tf.io.gfile.exists(path):
            raise InputError(
                f"{path}: no dataset metadata; run `alexnet-tf prepare-data` first (image folders), or "
                "`alexnet-tf index-records` on TFRecords that other tools wrote"
            )
        try:
            with tf.io.gfile.GFile(path, "r") as f:
                return cls.from_json(f.read())
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"{path}: unreadable metadata ({error}); re-run prepare-data") from None


def _check_types(value: Any, hint: Any, key: str) -> None:
    """Raises ValueError naming ``key`` (dotted) where parsed JSON ``value`` lacks a field or has
    another type than ``hint`` (a dataclass above, or a field's type): a hand-edited
    ``"num_records": "lots"`` must be one line naming the key, not a TypeError deep in a reader."""
    if hint is Any:
        return
    if isinstance(hint, types.UnionType):  # `X | None`
        if value is None and type(None) in typing.get_args(hint):
            return
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        _expect(isinstance(value, dict), key, "an object", value)
        hints = typing.get_type_hints(hint)
        for field in dataclasses.fields(hint):
            name = f"{key}.{field.name}" if key else field.name
            if field.name in value:
                _check_types(value[field.name], hints[field.name], name)
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ValueError(f"{name} is missing")
    elif origin is list:
        _expect(isinstance(value, list), key, "a list", value)
        for index, item in enumerate(value):
            _check_types(item, args[0], f"{key}[{index}]")
    elif origin is dict:
        _expect(isinstance(value, dict), key, "an object", value)
        for name, item in value.items():
            _check_types(item, args[1], f"{key}.{name}")
    else:
        numbers = (int, float) if hint is float else hint  # JSON writes 1.0 as 1
        _expect(isinstance(value, numbers) and not isinstance(value, bool), key, _NAMES[hint], value)


_NAMES = {int: "an integer", float: "a number", str: "a string"}


def _expect(ok: bool, key: str, kind: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key} must be {kind}, not {reprlib.repr(value)}")


def metadata_path(directory: str) -> str:
    return posixpath.join(directory, METADATA_FILENAME)


def mean_image_path(directory: str) -> str:
    return posixpath.join(directory, MEAN_IMAGE_FILENAME)


def save_mean_image(directory: str, mean_image: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, mean_image.astype(np.float32))
    write_atomically(mean_image_path(directory), buffer.getvalue())


def load_mean_image(directory: str) -> np.ndarray:
    """Reads the ``image_size × image_size × 3`` mean image; `InputError` if missing or malformed."""
    path = mean_image_path(directory)
    if not tf.io.gfile.exists(path):
        raise InputError(f"{path}: no mean image; run `alexnet-tf prepare-data` first (or use mean='channel')")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            mean_image = np.load(io.BytesIO(f.read()))
    except ValueError as error:
        raise InputError(f"{path}: unreadable ({error}); re-run prepare-data") from None
    if mean_image.ndim != 3 or mean_image.shape[2] != 3:
        raise InputError(f"{path}: shape {mean_image.shape}, expected height × width × 3; re-run prepare-data")
    return mean_image
