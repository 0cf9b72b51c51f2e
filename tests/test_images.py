"""Decoding, the §2 crop, JPEG draft decoding and the refusal reasons of `images`."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from alexnet_tf.prepare import images
from alexnet_tf.synthetic import synthetic_image
from tests.tiny_imagenet import jpeg_bytes

OPTIONS = images.ImageOptions()


def decode(encoded: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), np.int16)


@pytest.mark.parametrize("size", [(600, 200), (200, 600)])
def test_center_crop_keeps_the_central_square(size):
    # Three bands along the longer side: red, green, blue; the §2 crop is the green one.
    bands = np.zeros((max(size), max(size), 3), np.uint8)
    third = max(size) // 3
    for i in range(3):
        bands[:, i * third : (i + 1) * third, i] = 255
    bands = bands[: size[1], : size[0]] if size[0] > size[1] else bands.transpose(1, 0, 2)[: size[1], : size[0]]
    pixels = decode(images.prepare_image(jpeg_bytes(Image.fromarray(bands), "PNG"), OPTIONS).encoded)
    assert pixels.shape == (256, 256, 3)
    np.testing.assert_allclose(pixels.reshape(-1, 3).mean(axis=0), (0, 255, 0), atol=4)


def test_draft_decoding_matches_a_full_decode_without_shifting_the_crop():
    # A blurred checkerboard 1601 px wide: the 1/4-scale draft covers 400.25 of its 401 columns.
    y, x = np.mgrid[0:1200, 0:1601]
    board = (((x // 80) + (y // 80)) % 2 * 200 + 30).astype(np.uint8)
    data = jpeg_bytes(Image.fromarray(board).convert("RGB").filter(ImageFilter.GaussianBlur(4)))
    drafted, covered = images._decode_rgb(Image.open(io.BytesIO(data)), draft_to=256)
    full, _ = images._decode_rgb(Image.open(io.BytesIO(data)), draft_to=None)
    assert drafted.size == (401, 300) and covered == (400.25, 300.0)
    difference = np.abs(
        np.asarray(images.center_crop(drafted, 256, covered), np.int16) - np.asarray(images.center_crop(full, 256))
    )
    assert difference.mean() < 1.0  # a crop shifted by one source pixel differs by ~2.5 on average


def test_small_images_are_enlarged_and_stats_image_is_the_encoded_pixels():
    source = jpeg_bytes(synthetic_image(np.random.default_rng(2), 40, 30, (10, 20, 30)))
    prepared = images.prepare_image(source, OPTIONS, for_stats=True)
    assert (prepared.height, prepared.width) == (256, 256)
    # The §2 crop of the decoded source, exactly; the stored JPEG decodes to within its quantisation error.
    expected = np.asarray(images.center_crop(Image.open(io.BytesIO(source)).convert("RGB"), 256))
    np.testing.assert_array_equal(np.asarray(prepared.stats_image), expected)
    error = np.abs(decode(prepared.encoded).astype(int) - expected)
    assert error.mean() < 1.5 and error.max() <= 16


def test_keep_geometry_keeps_rgb_jpeg_bytes_and_reencodes_the_rest():
    options = images.ImageOptions(keep_geometry=True)
    rgb = jpeg_bytes(synthetic_image(np.random.default_rng(1), 90, 60, (1, 2, 3)))
    prepared = images.prepare_image(rgb, options, for_stats=True)
    assert prepared.encoded == rgb and (prepared.width, prepared.height) == (90, 60)
    assert prepared.stats_image.size == (256, 256)
    cmyk = jpeg_bytes(Image.new("CMYK", (30, 20), (0, 0, 0, 0)))
    converted = images.prepare_image(cmyk, options)
    assert Image.open(io.BytesIO(converted.encoded)).mode == "RGB" and converted.encoded != cmyk


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"just some text", "not an image"),
        (jpeg_bytes(Image.new("RGB", (300, 200)))[:400], "corrupt image header"),
        (jpeg_bytes(Image.effect_noise((300, 200), 50))[:3000], "truncated"),
    ],
)
def test_bad_files_raise_bad_image_with_the_reason(data, reason):
    with pytest.raises(images.BadImage, match=reason):
        images.prepare_image(data, OPTIONS)


def test_decompression_bombs_are_refused_before_decoding():
    with pytest.raises(
        images.BadImage, match=r"decompression bomb refused: 300x200 = 60,000 pixels > max_pixels 50,000"
    ):
        images.prepare_image(jpeg_bytes(Image.new("RGB", (300, 200))), images.ImageOptions(max_pixels=50_000))


def test_pixel_limit_raises_pillows_limit_and_restores_it():
    before = Image.MAX_IMAGE_PIXELS
    with images.pixel_limit(before * 3):
        assert Image.MAX_IMAGE_PIXELS == before * 3
    with images.pixel_limit(10):
        assert Image.MAX_IMAGE_PIXELS == before  # never lowered: our own 256x256 images stay readable
    assert Image.MAX_IMAGE_PIXELS == before


def test_16_bit_grayscale_is_scaled_and_float_images_are_refused():
    gray16 = Image.fromarray(np.full((30, 40), 0x8000, np.uint16))
    assert gray16.mode.startswith("I;16")
    pixels = decode(images.prepare_image(jpeg_bytes(gray16, "PNG"), OPTIONS).encoded)
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (128, 128, 128), atol=1)  # not clipped to 255
    with pytest.raises(images.BadImage, match="unsupported pixel format"):
        images.prepare_image(jpeg_bytes(Image.fromarray(np.zeros((20, 30), np.float32)), "TIFF"), OPTIONS)
