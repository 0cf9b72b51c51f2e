"""Small synthetic data, for benchmarks, tests and trying the tools without ImageNet.

* `write_image_folder`: a folder-per-class image set, the input of prepare-data;
* `write_synthetic_dataset`: records, metadata and mean image in prepare-data's output format,
  with statistics computed from the stored pixels by the same `PixelStats` prepare-data uses;
* `write_shapes_folder`: the demo's photo-like classes, an object shape per class drawn at a
  random position, scale, rotation and colour over a cluttered random background, so that a
  model must find the object (crops and mirrors matter) and cannot go by colour alone.

The images are photo-like enough for JPEG timings to be realistic (smooth colour fields with
fine noise, not pure noise, which compresses and decodes unlike photos), and each class has its
own tint so a model can tell them apart.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFilter

from alexnet_tf import paper
from alexnet_tf.files import atomic_path
from alexnet_tf.prepare.images import DEFAULT_JPEG_QUALITY, center_crop, encode_jpeg
from alexnet_tf.prepare.stats import PixelStats
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import ClassInfo, DatasetMetadata, ShardInfo, SplitInfo, save_mean_image

# Typical ILSVRC-2012 sizes (most are about 500×375; a few are much larger).
DEFAULT_SIZES = ((500, 375), (375, 500), (500, 333), (640, 480), (1024, 768))


def synthetic_image(rng: np.random.Generator, width: int, height: int, tint: Sequence[float]) -> Image.Image:
    """A ``width × height`` RGB image: a smooth random colour field, tinted, with fine noise."""
    coarse = rng.uniform(0, 255, (max(height // 32, 2), max(width // 32, 2), 3)) * 0.6
    coarse += np.asarray(tint, np.float64) * 0.4
    field = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    noisy = np.asarray(field, np.int16) + rng.integers(-10, 11, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_image_folder(
    root: str,
    *,
    classes: int,
    per_class: int,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    seed: int = 0,
    quality: int = DEFAULT_JPEG_QUALITY,
) -> list[str]:
    """Writes ``root/train/class_XX/class_XX_NNNN.JPEG`` files; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in range(classes):
        folder = posixpath.join(root, "train", f"class_{c:02d}")
        tf.io.gfile.makedirs(folder)
        tint = rng.uniform(0, 255, 3)
        for i in range(per_class):
            width, height = sizes[(c * per_class + i) % len(sizes)]
            encoded = encode_jpeg(synthetic_image(rng, width, height, tint), quality)
            path = posixpath.join(folder, f"class_{c:02d}_{i:04d}.JPEG")
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(encoded)
            paths.append(path)
    return paths


# Most distinct first (per-class accuracy of the demo's ten-class run), so that `classes=N`
# takes the N easiest to tell apart: a small test set learns in fewer steps.
SHAPES = ("ring", "cross", "bar", "crescent", "star", "diamond", "disc", "square", "triangle", "hexagon")


def shape_image(rng: np.random.Generator, shape: str, width: int, height: int) -> Image.Image:
    """A ``width × height`` photo-like image of one ``shape``: random place, size, rotation and
    colour, over a smooth random background with a few small distracting blobs, slightly blurred.

    The background is a muted version of `synthetic_image` (mixed halfway with its own grey) and
    the object a saturated colour a third to two thirds of the image across, so that the object
    stands out the way a photograph's subject does; the blobs are smaller than any object.
    """
    field = np.asarray(synthetic_image(rng, width, height, rng.uniform(0, 255, 3)), np.float32)
    muted = 0.5 * field + 0.5 * field.mean(axis=2, keepdims=True)
    background = Image.fromarray(muted.astype(np.uint8))
    draw = ImageDraw.Draw(background)
    side = min(width, height)
    for _ in range(rng.integers(0, 4)):  # clutter: small ellipses of other colours
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.02, 0.07) * side, rng.uniform(0.02, 0.07) * side
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
    radius = rng.uniform(0.17, 0.33) * side
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    # A saturated colour: one channel high, one low, the third anywhere.
    channels = rng.permutation(3)
    levels = np.empty(3)
    levels[channels] = [rng.uniform(200, 255), rng.uniform(0, 60), rng.uniform(0, 255)]
    colour = tuple(int(v) for v in levels)
    angle = rng.uniform(0, 2 * np.pi)
    if shape == "crescent":  # a disc with an offset disc cut out, pasted through a mask
        mask = Image.new("L", background.size, 0)
        cut = ImageDraw.Draw(mask)
        cut.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        dx, dy = 0.45 * radius * np.cos(angle), 0.45 * radius * np.sin(angle)
        cut.ellipse([cx - radius + dx, cy - radius + dy, cx + radius + dx, cy + radius + dy], fill=0)
        background.paste(Image.new("RGB", background.size, colour), mask=mask)
    else:
        _draw_shape(draw, shape, cx, cy, radius, angle, colour)
    return background.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.2)))


def _polygon(cx: float, cy: float, radii: Sequence[float], angle: float) -> list[tuple[float, float]]:
    count = len(radii)
    return [
        (cx + r * np.cos(angle + 2 * np.pi * i / count), cy + r * np.sin(angle + 2 * np.pi * i / count))
        for i, r in enumerate(radii)
    ]


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, angle: float, colour: tuple[int, ...]
) -> None:
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(radius * 0.3)))
    elif shape == "cross":
        arm = radius * 0.3
        for a in (angle, angle + np.pi / 2):
            dx, dy = np.cos(a), np.sin(a)
            px, py = -dy * arm, dx * arm
            points = [
                (cx - dx * radius + px, cy - dy * radius + py),
                (cx + dx * radius + px, cy + dy * radius + py),
                (cx + dx * radius - px, cy + dy * radius - py),
                (cx - dx * radius - px, cy - dy * radius - py),
            ]
            draw.polygon(points, fill=colour)
    elif shape == "bar":
        draw.polygon(_polygon(cx, cy, [radius, radius * 0.25] * 2, angle), fill=colour)
    else:
        radii = {
            "square": [radius] * 4,
            "triangle": [radius] * 3,
            "star": [radius, radius * 0.4] * 5,
            "diamond": [radius, radius * 0.55] * 2,
            "hexagon": [radius] * 6,
        }[shape]
        draw.polygon(_polygon(cx, cy, radii, angle), fill=colour)


def write_shapes_folder(
    root: str, *, classes: int, per_class: int, size: tuple[int, int] = (320, 256), seed: int = 0
) -> list[str]:
    """Writes ``root/train/<shape>/<shape>_NNNN.jpg`` for the first ``classes`` of `SHAPES`."""
    if not 1 <= classes <= len(SHAPES):
        raise ValueError(f"`classes` must be in 1..{len(SHAPES)}. Received: classes={classes}")
    rng = np.random.default_rng(seed)
    paths = []
    for shape in SHAPES[:classes]:
        folder = posixpath.join(root, "train", shape)
        tf.io.gfile.makedirs(folder)
        for i in range(per_class):
            path = posixpath.join(folder, f"{shape}_{i:04d}.jpg")
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(encode_jpeg(shape_image(rng, shape, *size), DEFAULT_JPEG_QUALITY))
            paths.append(path)
    return paths


def write_synthetic_dataset(
    directory: str,
    *,
    num_classes: int = 4,
    train_records: int = 32,
    train_shards: int = 4,
    validation_records: int = 8,
    validation_shards: int = 2,
    image_size: int | None = paper.IMAGE_SIZE,
    label_offset: int = 0,
    seed: int = 0,
) -> DatasetMetadata:
    """Writes a record dataset to ``directory`` and returns its metadata.

    Record ``i`` of a split has class ``i % num_classes`` (label ``class + label_offset``) and file
    name ``{split}_{i}.jpg``; records go to shards round-robin. ``image_size=None`` writes images
    of varied original geometry (sides 200–400) and sets the metadata's ``image_size`` to None.
    """
    rng = np.random.default_rng(seed)
    tf.io.gfile.makedirs(directory)
    classes = [ClassInfo(index=i, wnid=f"n{i:08d}", name=f"class {i}") for i in range(num_classes)]
    tints = rng.uniform(0, 255, (num_classes, 3))
    stats = PixelStats(image_size or paper.IMAGE_SIZE)
    splits = {}
    for split, count, num_shards in (
        (schema.TRAIN, train_records, train_shards),
        (schema.VALIDATION, validation_records, validation_shards),
    ):
        shards: list[list[bytes]] = [[] for _ in range(num_shards)]
        per_class = dict.fromkeys((c.wnid for c in classes), 0)
        for i in range(count):
            height, width = (image_size, image_size) if image_size else rng.integers(200, 401, 2).tolist()
            info = classes[i % num_classes]
            image = synthetic_image(rng, width, height, tints[info.index])
            encoded = encode_jpeg(image, DEFAULT_JPEG_QUALITY)
            per_class[info.wnid] += 1
            shards[i % num_shards].append(
                schema.serialize_example(
                    encoded=encoded,
                    height=height,
                    width=width,
                    label=info.index + label_offset,
                    synset=info.wnid,
                    text=info.name,
                    filename=f"{split}_{i}.jpg",
                )
            )
            if split == schema.TRAIN:
                stats.add(center_crop(image, stats.size))  # the encoded pixels, as prepare-data does
        infos = []
        for index, records in enumerate(shards):
            name = schema.shard_name(split, index, num_shards)
            _write_records(posixpath.join(directory, name), records)
            infos.append(ShardInfo(name=name, records=len(records)))
        splits[split] = SplitInfo(num_records=count, per_class=per_class, shards=infos)
    metadata = DatasetMetadata(
        classes=classes,
        splits=splits,
        label_offset=label_offset,
        image_size=image_size,
        stats=stats.to_dataset_stats(),
        options={"synthetic": True, "seed": seed},
    )
    save_mean_image(directory, stats.mean_image())
    metadata.save(directory)
    return metadata


def _write_records(path: str, records: list[bytes]) -> None:
    with atomic_path(path) as temp, tf.io.TFRecordWriter(temp) as writer:
        for record in records:
            writer.write(record)
