"""Decodes each upload once, upright, at the smallest scale that serves both the model input and the thumbnail."""

import contextlib
import io
import math
import threading
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from services.common.imageformats import DESCRIPTION, PILLOW_NAMES, opened_as
from services.common.imaging import orientation_of, reduce_to_rgb, register_openers, turn_upright, upright_size
from services.common.model_contract import IMAGE_SIZE
from services.inference.pixels import Letterbox, letterbox, to_model_pixels

MODEL_SIDE = IMAGE_SIZE
THUMB_SIZE = 256
# JPEG decoders can downscale by these factors for free while decoding (DCT scaling).
JPEG_SCALES = (8, 4, 2)
_JPEG_QUALITY = 85
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
# Major brands of the HEIF containers (HEIC, HEIF, AVIF) that are accepted.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
# What Pillow and its plugins raise on corrupt or truncated files, depending on the codec.
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, IndexError, TypeError, RuntimeError)
_CORRUPT = "the image is truncated or corrupt; upload the complete file"


class InvalidImage(Exception):
    """The upload cannot be classified; the message tells a person what to change."""


@dataclass(frozen=True)
class DecodedImage:
    """One upload, decoded once: what it is, its upright size, the model's pixels and the thumbnail."""

    format: str
    width: int
    height: int
    # EXIF orientation of the stored pixels (1 = upright as stored, 6 = turned a quarter clockwise to view...).
    orientation: int
    # uint8 RGB [224, 224, 3], row-major: the full centre square of the upright image.
    pixels: bytes
    thumbnail: bytes
    # "jpeg", or "png" for images with transparency.
    thumbnail_format: str
    # uint8 RGB [192, 192, 3]: the whole upright image letterboxed for the face detector, and where it sits.
    face_pixels: bytes
    letterbox: Letterbox


@dataclass(frozen=True)
class Plan:
    """What a decode will cost, read from the header: the factor it shrinks by, and the bytes it allocates."""

    image: Image.Image
    width: int
    height: int
    orientation: int
    # Decoded at 1/dct_scale by the JPEG decoder itself (or from a HEIF's embedded thumbnail, already selected on
    # `image`), then reduced by reduce_factor.
    dct_scale: int
    reduce_factor: int
    decode_bytes: int


def describe_unrecognised(data: bytes) -> str:
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        # An accepted container Pillow could not open: its boxes are cut short or damaged.
        return _CORRUPT
    for magic, name in _KNOWN_OTHERS:
        if data.startswith(magic):
            return f"{name} images are not supported; send {DESCRIPTION}"
    return f"the data is not an image in a supported format ({DESCRIPTION})"


def pixel_bytes(mode: str) -> int:
    """Bytes Pillow allocates per pixel: 4 for every multi-band mode (RGB is padded to 4) and 32-bit modes."""
    if len(mode) > 1 and mode not in ("I;16", "I;16B", "I;16L"):
        return 4
    return 2 if mode.startswith("I;16") else (4 if mode in ("I", "F") else 1)


def shrink_factor(width: int, height: int) -> int:
    """The largest factor keeping the short side at least the model's input and the long side the thumbnail's."""
    short, long = min(width, height), max(width, height)
    return max(1, min(short // MODEL_SIDE, long // THUMB_SIZE))


def smallest_serving_size(width: int, height: int) -> tuple[int, int]:
    """The smallest same-shaped size whose short side still fills the model input and long side the thumbnail."""
    scale = max(MODEL_SIDE / min(width, height), THUMB_SIZE / max(width, height))
    return min(width, math.ceil(width * scale)), min(height, math.ceil(height * scale))


def jpeg_scale(width: int, height: int) -> int:
    factor = shrink_factor(width, height)
    return next((scale for scale in JPEG_SCALES if factor >= scale), 1)


class ImageDecoder:
    """Opens uploads with Pillow (allowed formats only) and decodes them within the pixel and memory limits."""

    def __init__(self, *, max_pixels: int, large_decode_bytes: int, max_large_decodes: int) -> None:
        register_openers()
        self._max_pixels = max_pixels
        self._large_decode_bytes = large_decode_bytes
        # Full-size decodes (PNG, GIF, HEIC... at the pixel limit) allocate up to 4 bytes a pixel; few at once.
        self._large_slots = threading.BoundedSemaphore(max_large_decodes)

    def plan(self, data: bytes) -> Plan:
        """Reads the header only: format, pixel limit, orientation and the cost of decoding."""
        if not data:
            raise InvalidImage("the image is empty")
        image = self._open(data)
        width, height = image.size
        try:
            self._check_pixels(width, height)
        except InvalidImage:
            image.close()
            raise
        orientation = orientation_of(image)
        dct_scale = jpeg_scale(width, height) if image.format == "JPEG" else 1
        if image.format == "HEIF":
            self._choose_heif_thumbnail(image, width, height)
        decoded_width, decoded_height = math.ceil(image.width / dct_scale), math.ceil(image.height / dct_scale)
        decode_bytes = decoded_width * decoded_height * pixel_bytes(image.mode)
        if image.format == "JPEG" and image.info.get("progressive"):
            # A progressive JPEG keeps every DCT coefficient of the full image while decoding: 2 bytes each,
            # up to 3 a pixel.
            decode_bytes = width * height * 6
        reduce = shrink_factor(decoded_width, decoded_height)
        return Plan(image, width, height, orientation, dct_scale, reduce, decode_bytes)

    @staticmethod
    def _choose_heif_thumbnail(image: Image.Image, width: int, height: int) -> None:
        """Decodes a HEIF's embedded thumbnail instead of the image when it is big enough for both outputs.

        Phones store one (an iPhone's is 320 px wide) and HEVC has no cheap reduced-scale decode: the thumbnail
        costs a few milliseconds where the 12-megapixel image costs about half a second. pillow-heif picks only a
        thumbnail that is a scaled copy of the image (same aspect, rotation and mirroring), else keeps the image.
        """
        with contextlib.suppress(*_DECODE_ERRORS):  # a damaged thumbnail: the image itself is decoded instead
            image.draft(image.mode, smallest_serving_size(width, height))

    def is_large(self, plan: Plan) -> bool:
        return plan.decode_bytes > self._large_decode_bytes

    def decode(self, plan: Plan) -> DecodedImage:
        """Decodes the planned image once; large decodes wait for a slot."""
        with plan.image:
            if not self.is_large(plan):
                return self._decode(plan)
            with self._large_slots:
                return self._decode(plan)

    def _decode(self, plan: Plan) -> DecodedImage:
        image = plan.image
        try:
            if plan.dct_scale > 1:
                image.draft("RGB", (image.width // plan.dct_scale, image.height // plan.dct_scale))
            image.load()
            reduced = reduce_to_rgb(image, plan.reduce_factor)
        except _DECODE_ERRORS:
            raise InvalidImage(_CORRUPT) from None
        upright = turn_upright(reduced, plan.orientation)
        width, height = upright_size(plan.width, plan.height, plan.orientation)
        has_alpha = upright.mode == "RGBA"
        face_pixels, placed = letterbox(upright)
        return DecodedImage(
            format=opened_as(image.format).name,
            width=width,
            height=height,
            orientation=plan.orientation,
            pixels=to_model_pixels(upright).tobytes(),
            thumbnail=encode_thumbnail(upright, has_alpha=has_alpha),
            thumbnail_format="png" if has_alpha else "jpeg",
            face_pixels=face_pixels,
            letterbox=placed,
        )

    def _open(self, data: bytes) -> Image.Image:
        try:
            return Image.open(io.BytesIO(data), formats=PILLOW_NAMES)
        except UnidentifiedImageError:
            raise InvalidImage(describe_unrecognised(data)) from None
        except Image.DecompressionBombError:
            raise InvalidImage(
                f"the image has far more than {self._max_pixels / 1e6:g} megapixels, the limit; resize it first"
            ) from None
        except _DECODE_ERRORS:
            raise InvalidImage(_CORRUPT) from None

    def _check_pixels(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise InvalidImage("the image has no pixels")
        if width * height > self._max_pixels:
            raise InvalidImage(
                f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
                f"the limit is {self._max_pixels / 1e6:g} megapixels, so resize it first"
            )


def encode_thumbnail(upright: Image.Image, *, has_alpha: bool) -> bytes:
    thumb = upright.copy()
    # Bicubic, Pillow's default for thumbnails: a third cheaper than Lanczos, alike to the eye at this size.
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    if has_alpha:
        thumb.save(out, format="PNG", compress_level=6)
    else:
        thumb.convert("RGB").save(out, format="JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()
