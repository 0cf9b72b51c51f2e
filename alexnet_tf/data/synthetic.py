"""Small synthetic datasets in prepare-data's output format, for tests, benchmarks and smoke runs.

Writes JPEG records in the Model Garden schema (`schema.serialize_example`), the metadata
(`DatasetMetadata.save`) and the mean image (`save_mean_image`), with statistics computed from
the generated pixels. The images are smooth random colour fields plus noise, so their JPEGs are
about the size of ImageNet's at 256×256 (~25 KB at quality 90); full decoding runs at the rate
noted for ImageNet-like 256×256 records on this machine class (~3,800–4,500 images/s on 2 cores).
"""

from __future__ import annotations

import io
import posixpath

import numpy as np
import tensorflow as tf
from PIL import Image

from alexnet_tf import paper
from alexnet_tf.data import schema
from alexnet_tf.data.metadata import (
    ClassInfo,
    DatasetMetadata,
    DatasetStats,
    ShardInfo,
    SplitInfo,
    save_mean_image,
)

JPEG_QUALITY = 90
NOISE_STDDEV = 10.0  # 0–255 levels; sets the JPEG size and decode cost.


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A uint8 ``[height, width, 3]`` image: an upsampled 8×8 random colour field plus noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
    noisy = smooth + NOISE_STDDEV * rng.standard_normal(smooth.shape, dtype=np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


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
    """Writes a dataset to ``directory`` and returns its metadata.

    Record ``i`` of a split has class ``i % num_classes`` (label ``class + label_offset``) and file
    name ``{split}_{i}.jpg``; records go to shards round-robin. ``image_size=None`` writes images
    of varied original geometry (sides 200–400) and sets the metadata's ``image_size`` to None.
    """
    rng = np.random.default_rng(seed)
    tf.io.gfile.makedirs(directory)
    classes = [ClassInfo(index=i, wnid=f"n{i:08d}", name=f"class {i}") for i in range(num_classes)]
    splits = {}
    stats = _Statistics(image_size or paper.IMAGE_SIZE)
    for split, count, num_shards in (
        (schema.TRAIN, train_records, train_shards),
        (schema.VALIDATION, validation_records, validation_shards),
    ):
        shards = [[] for _ in range(num_shards)]
        per_class = dict.fromkeys((c.wnid for c in classes), 0)
        for i in range(count):
            height, width = (image_size, image_size) if image_size else tuple(rng.integers(200, 401, 2))
            image = random_image(rng, int(height), int(width))
            cls = classes[i % num_classes]
            per_class[cls.wnid] += 1
            shards[i % num_shards].append(
                schema.serialize_example(
                    encoded=encode_jpeg(image),
                    height=int(height),
                    width=int(width),
                    label=cls.index + label_offset,
                    synset=cls.wnid,
                    text=cls.name,
                    filename=f"{split}_{i}.jpg",
                )
            )
            if split == schema.TRAIN:
                stats.add(image)
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
        stats=stats.result(),
        options={"synthetic": True, "seed": seed},
    )
    save_mean_image(directory, stats.mean_image())
    metadata.save(directory)
    return metadata


def _write_records(path: str, records: list[bytes]) -> None:
    tmp = path + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        for record in records:
            writer.write(record)
    tf.io.gfile.rename(tmp, path, overwrite=True)


class _Statistics:
    """Running sums for the mean image (images resized to ``size``²) and §4.1's RGB PCA."""

    def __init__(self, size: int):
        self.size = size
        self.count = 0
        self.image_sum = np.zeros((size, size, 3))
        self.pixels = 0
        self.rgb_sum = np.zeros(3)  # of RGB scaled to [0, 1]
        self.rgb_outer_sum = np.zeros((3, 3))

    def add(self, image: np.ndarray) -> None:
        if image.shape[:2] != (self.size, self.size):
            image = np.asarray(Image.fromarray(image).resize((self.size, self.size), Image.BILINEAR))
        self.count += 1
        self.image_sum += image
        rgb = image.reshape(-1, 3) / 255.0
        self.pixels += len(rgb)
        self.rgb_sum += rgb.sum(axis=0)
        self.rgb_outer_sum += rgb.T @ rgb

    def mean_image(self) -> np.ndarray:
        return (self.image_sum / max(self.count, 1)).astype(np.float32)

    def result(self) -> DatasetStats:
        mean = self.rgb_sum / max(self.pixels, 1)
        covariance = self.rgb_outer_sum / max(self.pixels, 1) - np.outer(mean, mean)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        return DatasetStats(
            mean_rgb=(mean * 255.0).tolist(),
            eigenvalues=eigenvalues[order].tolist(),
            eigenvectors=eigenvectors[:, order].tolist(),
            num_images=self.count,
        )
