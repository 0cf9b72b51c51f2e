"""Small files that claim huge images (decompression bombs), written without ever holding the pixels.

`uniform_gif` writes a valid GIF of one colour with LZW codes as giflib's encoder would emit them:
after each clear code the strings grow by one pixel per code, so 30000×30000 pixels take about
600 KB. Pillow and TensorFlow decode the small ones (checked in `tests/test_export.py`).
"""

from __future__ import annotations

import struct

_MIN_CODE_SIZE = 2  # a 4-colour palette
_MAX_CODE = 4095  # LZW codes are at most 12 bits


def uniform_gif(width: int, height: int, frames: list[tuple[int, int, int, int]] | None = None) -> bytes:
    """A GIF89a with a ``width``×``height`` screen and one colour-0 frame per (left, top, width,
    height) in ``frames`` (default: one frame filling the screen)."""
    frames = frames or [(0, 0, width, height)]
    palette = bytes([120, 60, 200, 0, 0, 0, 255, 255, 255, 10, 10, 10])
    data = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80 | (_MIN_CODE_SIZE - 1), 0, 0) + palette)
    for left, top, frame_width, frame_height in frames:
        data += b"\x2c" + struct.pack("<HHHHB", left, top, frame_width, frame_height, 0) + bytes([_MIN_CODE_SIZE])
        codes = _uniform_lzw(frame_width * frame_height)
        for start in range(0, len(codes), 255):
            chunk = codes[start : start + 255]
            data += bytes([len(chunk)]) + chunk
        data += b"\x00"
    return bytes(data + b"\x3b")


def _uniform_lzw(pixels: int) -> bytes:
    """The LZW code stream of ``pixels`` pixels of colour 0 (giflib's encoder: the code width grows
    when the next code no longer fits, checked after each code written; a clear code when the
    table is full)."""
    clear, end = 1 << _MIN_CODE_SIZE, (1 << _MIN_CODE_SIZE) + 1
    out = bytearray()
    state = {"bits": 0, "shift": 0, "width": _MIN_CODE_SIZE + 1, "next": end + 1}

    def write(code: int) -> None:
        state["bits"] |= code << state["shift"]
        state["shift"] += state["width"]
        while state["shift"] >= 8:
            out.append(state["bits"] & 0xFF)
            state["bits"] >>= 8
            state["shift"] -= 8
        if state["next"] >= 1 << state["width"] and code <= _MAX_CODE:
            state["width"] += 1

    write(clear)
    longest = 1  # the table holds the runs of 2 .. longest pixels
    remaining = pixels
    while remaining:
        run = min(longest, remaining)
        remaining -= run
        write(0 if run == 1 else end + run - 1)  # the run of `run` zeros
        if not remaining:
            break
        if state["next"] >= _MAX_CODE:
            write(clear)
            state.update(width=_MIN_CODE_SIZE + 1, next=end + 1)
            longest = 1
        else:
            state["next"] += 1
            longest += 1
    write(end)
    if state["shift"]:
        out.append(state["bits"] & 0xFF)
    return bytes(out)
