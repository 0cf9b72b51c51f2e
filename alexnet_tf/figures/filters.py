"""``show-filters``: conv1's kernels as Figure 3 shows them, one block of rows per tower.

In the paper (Figure 3) the kernels learned on GPU 1 are "largely colour-agnostic" and those on
GPU 2 "largely colour-specific". The number reported per tower is its kernels' mean colour
saturation: each kernel is min-max scaled for display (as drawn), and its saturation is the mean
over its pixels of the chroma ``max(R, G, B) − min(R, G, B)`` in [0, 1]: 0 for a grey kernel
(the same pattern in all three channels), up to 1 for pure colours. Chroma rather than HSV's
``(max − min) / max``, which blows up at the dark pixels every min-max scaled kernel has.

Towers: the separate-tower model's ``conv1_tower0`` and ``conv1_tower1``; a single ``conv1`` is
split into as many groups as conv2 has (Caffe's grouped layout: conv2's groups take conv1's maps
in halves), else shown as one block.
"""

from __future__ import annotations

import dataclasses
import math
import re

import keras
import numpy as np

from alexnet_tf.errors import InputError
from alexnet_tf.figures.sheet import CAPTION_BAND, Sheet, to_uint8
from alexnet_tf.files import write_png
from alexnet_tf.network.layers import network_of
from alexnet_tf.runs import load_model

COLUMNS = 16  # kernels per row (Figure 3: 48 per GPU in 3 rows of 16)
ZOOM = 6  # PNG pixels per kernel pixel: an 11×11 kernel is 66×66
GAP = 4  # pixels between kernels
MARGIN = 8  # pixels around the sheet


@dataclasses.dataclass(frozen=True)
class Tower:
    """One tower's conv1 kernels ``[n, h, w, 3]`` (float32, as trained)."""

    name: str
    kernels: np.ndarray

    @property
    def saturation(self) -> float:
        """Mean colour saturation of the tower's displayed kernels (see the module docstring)."""
        return float(np.mean(kernel_saturation(display_scale(self.kernels))))


def conv1_towers(network: keras.Model) -> list[Tower]:
    """conv1's kernels, one `Tower` per tower (see the module docstring)."""
    layers = {layer.name: layer for layer in network.layers}
    names = sorted((name for name in layers if re.fullmatch(r"conv1_tower\d+", name)), key=lambda n: int(n[11:]))
    if names:
        return [Tower(name, _kernels(layers[name])) for name in names]
    if "conv1" not in layers:
        raise InputError(f"{network.name}: no conv1 or conv1_tower0/1 layer; is it an alexnet-tf model?")
    kernels = _kernels(layers["conv1"])
    groups = getattr(layers.get("conv2"), "groups", 1)
    if groups == 1:
        return [Tower("conv1", kernels)]
    return [Tower(f"conv1 group {g}", part) for g, part in enumerate(np.split(kernels, groups))]


def display_scale(kernels: np.ndarray) -> np.ndarray:
    """Each kernel min-max scaled to [0, 1] over its pixels and channels (a constant one: 0.5)."""
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    high = kernels.max(axis=(1, 2, 3), keepdims=True)
    span = high - low
    return np.where(span > 0, (kernels - low) / np.where(span > 0, span, 1), 0.5)


def kernel_saturation(displayed: np.ndarray) -> np.ndarray:
    """``[n]``: each displayed kernel's mean chroma, ``max − min`` over RGB per pixel."""
    return np.mean(displayed.max(axis=-1) - displayed.min(axis=-1), axis=(1, 2))


def kernel_origin(towers: list[Tower], tower: int, index: int) -> tuple[int, int]:
    """PNG pixel (top, left) of kernel ``index`` of tower number ``tower`` on the sheet."""
    top = MARGIN
    for previous in towers[:tower]:
        top += _block_height(previous)
    side = _cell(towers[tower])
    row, column = divmod(index, COLUMNS)
    return top + CAPTION_BAND + row * side, MARGIN + column * side


def filter_sheet(towers: list[Tower]) -> Sheet:
    """The kernels on a `Sheet`: a caption line, then rows of `COLUMNS` kernels, per tower."""
    columns = min(COLUMNS, max(len(t.kernels) for t in towers))
    width = 2 * MARGIN + columns * max(_cell(t) for t in towers) - GAP
    sheet = Sheet(2 * MARGIN + sum(_block_height(t) for t in towers), width)
    for number, tower in enumerate(towers):
        top, left = kernel_origin(towers, number, 0)
        sheet.caption(
            f"{tower.name}: {len(tower.kernels)} kernels, mean colour saturation {tower.saturation:.3f}",
            top - CAPTION_BAND,
            left,
        )
        for index, kernel in enumerate(to_uint8(display_scale(tower.kernels))):
            zoomed = np.repeat(np.repeat(kernel, ZOOM, axis=0), ZOOM, axis=1)
            sheet.place(zoomed, *kernel_origin(towers, number, index))
    return sheet


def write_filters(source: str, output: str) -> tuple[list[Tower], tuple[int, int]]:
    """Writes the conv1 kernels of ``source`` (a run or ``.keras`` file) as a PNG to ``output``;
    returns the towers and the PNG's (width, height)."""
    _, model = load_model(source)
    towers = conv1_towers(network_of(model))
    return towers, write_png(output, filter_sheet(towers).figure())


def _kernels(layer: keras.layers.Layer) -> np.ndarray:
    return np.transpose(np.asarray(layer.kernel, np.float32), [3, 0, 1, 2])  # [h, w, 3, n] -> [n, h, w, 3]


def _cell(tower: Tower) -> int:
    return tower.kernels.shape[1] * ZOOM + GAP


def _block_height(tower: Tower) -> int:
    return CAPTION_BAND + math.ceil(len(tower.kernels) / COLUMNS) * _cell(tower) + GAP
