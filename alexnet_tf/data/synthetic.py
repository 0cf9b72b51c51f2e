"""Small synthetic image folders, for benchmarks, tests and trying the tools without ImageNet.

The images are photo-like enough for JPEG timings to be realistic (smooth colour fields with
fine noise, not pure noise, which compresses and decodes unlike photos), and each class has its
own tint so a model can tell them apart.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

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
    quality: int = 90,
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
            buffer = io.BytesIO()
            synthetic_image(rng, width, height, tint).save(buffer, format="JPEG", quality=quality)
            path = posixpath.join(folder, f"class_{c:02d}_{i:04d}.JPEG")
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(buffer.getvalue())
            paths.append(path)
    return paths
