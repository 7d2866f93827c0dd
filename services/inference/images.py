"""Checks uploads before they reach the model: format allow-list, pixel limit from the header, complete data."""

import io
import math
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Pillow format name -> the name Classify reports; nothing else is ever opened.
FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp")
ALLOWED_NAMES = "JPEG, PNG, WebP, GIF or BMP"
# JPEG decoders can downscale by these factors for free while decoding (DCT scaling).
JPEG_SCALES = (8, 4, 2)
# Magic numbers of common formats we refuse, to say which one was sent.
_KNOWN_OTHERS = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"8BPS", "Photoshop"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
)
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
# What Pillow raises on corrupt or truncated files, depending on the codec.
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, IndexError, TypeError)


class InvalidImage(Exception):
    """The upload cannot be classified; the message tells a person what to change."""


@dataclass(frozen=True)
class CheckedImage:
    """A validated image: what it is, and the bytes to send to the model."""

    format: str
    width: int
    height: int
    payload: bytes


def describe_unrecognised(data: bytes) -> str:
    for magic, name in _KNOWN_OTHERS:
        if data.startswith(magic):
            return f"{name} images are not supported; send {ALLOWED_NAMES}"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return f"{_HEIF_BRANDS[data[8:12]]} images are not supported; send {ALLOWED_NAMES}"
    return f"the data is not an image in a supported format ({ALLOWED_NAMES})"


def jpeg_scale(width: int, height: int, min_side: int) -> int:
    """The largest DCT scale that keeps the short side at least min_side (what the model's own decoder picks)."""
    short = min(width, height)
    return next((scale for scale in JPEG_SCALES if short // scale >= min_side), 1)


class ImageChecker:
    """Validates one upload with Pillow and decides what to send to the model."""

    def __init__(self, *, max_pixels: int, shrink_jpeg_min_side: int = 0) -> None:
        self._max_pixels = max_pixels
        self._shrink_min_side = shrink_jpeg_min_side

    def check(self, data: bytes) -> CheckedImage:
        if not data:
            raise InvalidImage("the image is empty")
        image = self._open(data)
        with image:
            width, height = image.size
            self._check_pixels(width, height)
            payload = self._payload(image, data)
        return CheckedImage(FORMATS[image.format], width, height, payload)

    def _open(self, data: bytes) -> Image.Image:
        try:
            return Image.open(io.BytesIO(data), formats=list(FORMATS))
        except UnidentifiedImageError:
            raise InvalidImage(describe_unrecognised(data)) from None
        except Image.DecompressionBombError:
            raise InvalidImage(
                f"the image has far more than {self._max_pixels / 1e6:g} megapixels, the limit; resize it first"
            ) from None
        except _DECODE_ERRORS:
            raise InvalidImage("the image is corrupt or truncated; upload the complete file") from None

    def _check_pixels(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise InvalidImage("the image has no pixels")
        if width * height > self._max_pixels:
            raise InvalidImage(
                f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
                f"the limit is {self._max_pixels / 1e6:g} megapixels, so resize it first"
            )

    def _payload(self, image: Image.Image, data: bytes) -> bytes:
        """Decodes everything (so truncation shows up here) and returns the bytes the model should get."""
        try:
            if image.format == "JPEG":
                return self._jpeg_payload(image, data)
            if image.format == "PNG":
                # CRCs of every chunk through IEND: catches truncation without inflating the pixels.
                image.verify()
            else:
                image.load()
            if image.format == "WEBP" and getattr(image, "is_animated", False):
                # The model's WebP decoder reads animations only as RGBA, which its graph does not take.
                return encode_png(image.convert("RGB"))
        except _DECODE_ERRORS:
            raise InvalidImage("the image is truncated or corrupt; upload the complete file") from None
        return data

    def _jpeg_payload(self, image: Image.Image, data: bytes) -> bytes:
        width, height = image.size
        scale = jpeg_scale(width, height, self._shrink_min_side) if self._shrink_min_side else 1
        shrunk = (math.ceil(width / scale), math.ceil(height / scale))
        # Pre-decoding pays only when the pixels at the model's own scale are smaller than the file.
        if image.mode == "CMYK" or (scale > 1 and shrunk[0] * shrunk[1] * 3 < len(data) // 2):
            image.draft("RGB", shrunk)
            image.load()
            return encode_png(image.convert("RGB"))
        if not jpeg_is_complete(image, data):
            raise InvalidImage("the image is truncated or corrupt; upload the complete file")
        return data


def jpeg_is_complete(image: Image.Image, data: bytes) -> bool:
    """Whether an end-of-image marker follows the scan data: a byte search instead of a decode.

    Inside entropy-coded data every 0xFF is followed by 0x00, so FF D9 after the first scan is the real end marker.
    Searching from the end finds it at once, where it almost always is.
    """
    scan_start = image.tile[0][2] if image.tile else 0
    return data.rfind(b"\xff\xd9", scan_start) != -1


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
