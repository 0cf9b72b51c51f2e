"""Tiny ImageNet-shaped datasets with ImageNet's quirks, for the prepare-data tests.

`make_dataset` writes ``root/train/<wnid>/*.JPEG`` (small photo-like images, 40×30 to
300×200), the quirks ILSVRC-2012 has (a CMYK JPEG, a PNG named ``.JPEG``, a grayscale image),
files that must be skipped (truncated, zero-byte, not an image) or ignored (``.DS_Store``), a
``LOC_synset_mapping.txt``, and a validation set in one of the three label forms. It returns a
`TinyDataset` that knows which files should become records, with which class.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np
from PIL import Image

from alexnet_tf.synthetic import synthetic_image

WNIDS = ("n01440764", "n01443537", "n01484850")
NAMES = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish", "n01484850": "great white shark"}
SIZES = ((40, 30), (300, 200), (64, 96), (120, 80), (200, 300), (90, 90))
VAL_FORMS = ("folders", "csv", "lines")


@dataclasses.dataclass
class TinyDataset:
    root: str
    train: dict[str, str]  # expected train records: file name -> wnid
    validation: dict[str, str]  # expected validation records: file name -> wnid
    bad: dict[str, str]  # files that must be skipped: file name -> a word of the expected reason
    sizes: dict[str, tuple[int, int]]  # the plain training images' (width, height)
    val_labels: str | None = None  # the --val-labels file, for the "lines" form


def jpeg_bytes(image: Image.Image, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def make_dataset(
    root: str, *, per_class: int = 4, val_per_class: int = 2, val_form: str | None = "folders", quirks: bool = True
) -> TinyDataset:
    rng = np.random.default_rng(1)
    data = TinyDataset(root=root, train={}, validation={}, bad={}, sizes={})
    for c, wnid in enumerate(WNIDS):
        folder = os.path.join(root, "train", wnid)
        os.makedirs(folder)
        for i in range(per_class):
            width, height = SIZES[(c + i) % len(SIZES)]
            name = f"{wnid}_{i}.JPEG"
            _write(folder, name, jpeg_bytes(synthetic_image(rng, width, height, rng.uniform(0, 255, 3))))
            data.train[name] = wnid
            data.sizes[name] = (width, height)
    if quirks:
        _add_quirks(data, rng)
    with open(os.path.join(root, "LOC_synset_mapping.txt"), "w") as f:
        f.writelines(f"{wnid} {NAMES[wnid]}\n" for wnid in WNIDS)
    if val_form is not None:
        _add_validation(data, rng, val_per_class, val_form)
    return data


def _add_quirks(data: TinyDataset, rng: np.random.Generator) -> None:
    train = os.path.join(data.root, "train")
    a, b, c = (os.path.join(train, wnid) for wnid in WNIDS)
    _write(a, "n01440764_cmyk.JPEG", jpeg_bytes(Image.new("CMYK", (50, 40), (10, 200, 30, 0))))
    data.train["n01440764_cmyk.JPEG"] = WNIDS[0]
    png = synthetic_image(rng, 70, 50, (200, 100, 0))
    _write(b, "n01443537_png.JPEG", jpeg_bytes(png, "PNG"))
    data.train["n01443537_png.JPEG"] = WNIDS[1]
    gray = synthetic_image(rng, 80, 60, (90, 90, 90)).convert("L")
    _write(c, "n01484850_gray.JPEG", jpeg_bytes(gray))
    data.train["n01484850_gray.JPEG"] = WNIDS[2]

    whole = jpeg_bytes(synthetic_image(rng, 120, 90, (0, 0, 0)))
    _write(a, "n01440764_truncated.JPEG", whole[: len(whole) // 2])
    _write(b, "n01443537_empty.JPEG", b"")
    _write(c, "notes.txt", b"not an image\n")
    data.bad.update(
        {"n01440764_truncated.JPEG": "truncated", "n01443537_empty.JPEG": "empty", "notes.txt": "not an image"}
    )
    _write(a, ".DS_Store", b"\x00\x00\x00\x01Bud1")
    _write(train, ".DS_Store", b"\x00\x00\x00\x01Bud1")


def _add_validation(data: TinyDataset, rng: np.random.Generator, per_class: int, form: str) -> None:
    val = os.path.join(data.root, "val")
    os.makedirs(val)
    for c, wnid in enumerate(WNIDS):
        for i in range(per_class):
            name = f"ILSVRC2012_val_{c * per_class + i + 1:08d}.JPEG"
            folder = os.path.join(val, wnid) if form == "folders" else val
            os.makedirs(folder, exist_ok=True)
            _write(folder, name, jpeg_bytes(synthetic_image(rng, 100, 80, rng.uniform(0, 255, 3))))
            data.validation[name] = wnid
    ordered = sorted(data.validation)
    if form == "csv":
        with open(os.path.join(data.root, "LOC_val_solution.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "PredictionString"])
            for name in reversed(ordered):  # any order: rows are matched by image id
                wnid = data.validation[name]
                writer.writerow([os.path.splitext(name)[0], f"{wnid} 1 2 30 40 {wnid} 5 6 7 8"])
    elif form == "lines":
        data.val_labels = os.path.join(data.root, "val_labels.txt")
        with open(data.val_labels, "w") as f:
            f.writelines(f"{data.validation[name]}\n" for name in ordered)


def _write(folder: str, name: str, content: bytes) -> None:
    with open(os.path.join(folder, name), "wb") as f:
        f.write(content)
