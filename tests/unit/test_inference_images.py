"""Image validation: allowed formats, limits, truncation, and the lossless pre-decoding of large JPEGs."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from services.inference.images import ImageChecker, InvalidImage, jpeg_scale
from tests.support.inference_fixtures import sample_image


def checker(**overrides) -> ImageChecker:
    return ImageChecker(**{"max_pixels": 50_000_000, "shrink_jpeg_min_side": 256, **overrides})


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_allowed_formats_pass_unchanged(fmt):
    data = sample_image("chelsea", fmt)
    image = checker().check(data)
    assert (image.format, image.width, image.height) == (fmt.lower(), 451, 300)
    assert image.payload == data


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_truncated_files_are_refused(fmt):
    data = sample_image("chelsea", fmt)
    with pytest.raises(InvalidImage, match="truncated"):
        checker().check(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"hello world", "not an image"),
        (b"MM\x00*" + bytes(32), "TIFF"),
        (b"\x00\x00\x00\x1cftypavif" + bytes(32), "AVIF"),
        (b"%PDF-1.7", "PDF"),
    ],
)
def test_unsupported_data_says_what_it_is(data, fragment):
    with pytest.raises(InvalidImage, match=fragment):
        checker().check(data)


def test_other_pillow_formats_are_not_opened():
    data = encode(np.zeros((8, 8, 3), np.uint8), "TIFF")
    with pytest.raises(InvalidImage, match="TIFF images are not supported"):
        checker().check(data)


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(InvalidImage, match="megapixels"):
        checker(max_pixels=451 * 300 - 1).check(sample_image("chelsea", "PNG"))


def png_claiming(side: int) -> bytes:
    """A tiny PNG whose header claims side x side pixels (with a valid header checksum)."""
    data = encode(np.zeros((1, 1), np.uint8), "PNG")
    header = b"IHDR" + side.to_bytes(4, "big") * 2 + data[24:29]
    return data[:12] + header + zlib.crc32(header).to_bytes(4, "big") + data[33:]


@pytest.mark.parametrize("side", [8000, 20000])
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(InvalidImage, match="megapixels"):
        checker().check(png_claiming(side))


def test_jpeg_scale_keeps_the_short_side():
    assert jpeg_scale(4000, 3000, 256) == 8
    assert jpeg_scale(1100, 700, 256) == 2
    assert jpeg_scale(600, 400, 256) == 1
    assert jpeg_scale(4000, 3000, 0) == 8


def test_large_jpeg_is_sent_predecoded_at_the_models_scale():
    noisy = np.random.default_rng(1).integers(0, 255, (2000, 3000, 3), dtype=np.uint8)
    data = encode(noisy, "JPEG", quality=95)
    image = checker().check(data)
    decoded = Image.open(io.BytesIO(image.payload))
    assert decoded.format == "PNG" and decoded.size == (750, 500)  # 2000 // 8 < 256, so scale 4
    assert len(image.payload) < len(data) / 2
    assert (image.format, image.width, image.height) == ("jpeg", 3000, 2000)


def test_shrinking_can_be_disabled():
    noisy = np.random.default_rng(1).integers(0, 255, (2000, 3000, 3), dtype=np.uint8)
    data = encode(noisy, "JPEG", quality=95)
    assert checker(shrink_jpeg_min_side=0).check(data).payload == data


def test_cmyk_jpeg_is_converted_for_the_model():
    buffer = io.BytesIO()
    Image.open(io.BytesIO(sample_image())).convert("CMYK").save(buffer, "JPEG")
    image = checker().check(buffer.getvalue())
    assert Image.open(io.BytesIO(image.payload)).mode == "RGB"
    assert image.format == "jpeg"
