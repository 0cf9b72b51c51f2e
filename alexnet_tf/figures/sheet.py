"""A sheet of images at exact pixel positions, with captions, written as a PNG.

The filter and neighbour pictures are placed with `Figure.figimage` at the figure's own DPI, so
every image pixel lands unresampled at a known PNG pixel: what a test (or a reader zooming in)
sees is the data, not an interpolation of it. Captions are matplotlib text over blank bands.
Matplotlib is used without pyplot (no global state, no display).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from matplotlib.figure import Figure

DPI = 100
CAPTION_FONT_SIZE = 7  # points: 9.7 pixels at DPI 100, inside a 14-pixel band
CAPTION_BAND = 14  # pixels above a row of images for its captions
BACKGROUND = 255


@dataclasses.dataclass
class Sheet:
    """A white ``height × width`` canvas; `place` images on it, `caption` text, `figure` it."""

    height: int
    width: int
    pixels: np.ndarray = dataclasses.field(init=False)
    captions: list[tuple[int, int, str]] = dataclasses.field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.pixels = np.full([self.height, self.width, 3], BACKGROUND, np.uint8)

    def place(self, image: np.ndarray, top: int, left: int) -> None:
        """Copies uint8 ``[h, w, 3]`` ``image`` with its top-left pixel at (``top``, ``left``)."""
        height, width = image.shape[:2]
        self.pixels[top : top + height, left : left + width] = image

    def caption(self, text: str, top: int, left: int) -> None:
        """Text whose top-left corner is at pixel (``top``, ``left``)."""
        self.captions.append((top, left, text))

    def figure(self) -> Figure:
        figure = Figure(figsize=(self.width / DPI, self.height / DPI), dpi=DPI)
        figure.figimage(self.pixels, xo=0, yo=0, origin="upper", resize=False)
        for top, left, text in self.captions:
            figure.text(
                left / self.width,
                1.0 - top / self.height,
                text,
                fontsize=CAPTION_FONT_SIZE,
                verticalalignment="top",
                horizontalalignment="left",
            )
        return figure


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float ``[..., 3]`` in [0, 1] as uint8 0–255 (rounded)."""
    return np.clip(np.round(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)
