"""What an uploaded file is: format, upright size, orientation and transparency, read by Pillow from the header."""

import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError

from services.common.imageformats import DESCRIPTION, PILLOW_NAMES, opened_as
from services.common.imaging import orientation_of, register_openers

MAX_FILENAME_CHARS = 255
MAX_CAMERA_CHARS = 100
# EXIF tags: the Exif sub-IFD, DateTimeOriginal and its zone offset in it; Make and Model in the main IFD.
_EXIF_IFD = 0x8769
_DATE_TIME_ORIGINAL = 36867
_OFFSET_TIME_ORIGINAL = 36881
_MAKE = 271
_MODEL = 272
# "+02:00" or "-05:30".
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# Control and invisible characters, which can disguise a name (bidirectional overrides, zero-width marks):
# Unicode categories C* (control, format, private, unassigned) and Zl, Zp (line and paragraph separators).
_INVISIBLE_CATEGORIES = ("C", "Zl", "Zp")


TRUNCATED = "the image is truncated or corrupt; upload the complete file"
# Inside JPEG entropy-coded data every 0xFF is followed by 0x00, so FF D9 after the first scan is the real end.
_JPEG_END = b"\xff\xd9"
_SCAN_CHUNK_BYTES = 1024 * 1024
# What Pillow's PNG verify() raises on a cut or damaged file.
_VERIFY_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError)


class UnsupportedImage(ValueError):
    """Not an image this service accepts; the message says why."""


@dataclass(frozen=True)
class Taken:
    """When and with what a photo was taken, from its EXIF header; empty when the file does not say."""

    at: datetime | None = None
    camera_make: str = ""
    camera_model: str = ""

    def fields(self) -> dict[str, Any]:
        """The NewImage fields this fills."""
        return {"taken_at": self.at, "camera_make": self.camera_make, "camera_model": self.camera_model}


def exif_taken(exif: Image.Exif) -> Taken:
    """DateTimeOriginal (with OffsetTimeOriginal when present, else read as UTC), Make and Model."""
    details = exif.get_ifd(_EXIF_IFD)
    return Taken(
        _exif_time(details.get(_DATE_TIME_ORIGINAL), details.get(_OFFSET_TIME_ORIGINAL)),
        _exif_text(exif.get(_MAKE)),
        _exif_text(exif.get(_MODEL)),
    )


def _exif_time(value: object, offset: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        taken = datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # absent ("    :  :  ") or malformed: no date rather than a wrong one
    zone = UTC
    if isinstance(offset, str) and (match := _OFFSET.fullmatch(offset.strip("\x00 "))):
        sign = -1 if match.group(1) == "-" else 1
        zone = timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))
    return taken.replace(tzinfo=zone)


def _exif_text(value: object) -> str:
    if not isinstance(value, str):
        return ""
    text = "".join(c for c in value if c.isprintable()).strip()
    return text[:MAX_CAMERA_CHARS]


@dataclass(frozen=True)
class ImageInfo:
    format: str
    content_type: str
    extension: str
    # Upright: the stored size turned by the EXIF orientation.
    width: int
    height: int
    orientation: int
    has_alpha: bool
    taken: Taken = Taken()

    @property
    def thumb_format(self) -> str:
        return "png" if self.has_alpha else "jpeg"


def inspect(source: IO[bytes], *, max_pixels: int) -> ImageInfo:
    """Detects the format from the bytes, enforces the pixel limit from the header, and refuses a JPEG or PNG
    that ends early (without decoding pixels), so a cut file is refused even while the classifier is down."""
    register_openers()
    source.seek(0)
    try:
        with Image.open(source, formats=PILLOW_NAMES) as image:
            width, height = image.size
            fmt, mode, transparent = image.format, image.mode, "transparency" in image.info
            orientation = orientation_of(image)
            taken = _taken(image)
            complete = _is_complete(image, source)
    except Image.DecompressionBombError:
        raise UnsupportedImage(f"the image has more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError):
        raise UnsupportedImage(f"not a supported image; send {DESCRIPTION}") from None
    if not complete:
        raise UnsupportedImage(TRUNCATED)
    if width < 1 or height < 1:
        raise UnsupportedImage("the image has no pixels")
    if width * height > max_pixels:
        raise UnsupportedImage(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels in total")
    image_format = opened_as(fmt)
    if orientation >= 5:
        width, height = height, width
    return ImageInfo(
        image_format.pillow,
        image_format.content_type,
        image_format.extension,
        width,
        height,
        orientation,
        mode in _ALPHA_MODES or transparent,
        taken,
    )


def _is_complete(image: ImageFile.ImageFile, source: IO[bytes]) -> bool:
    """JPEG: an end-of-image marker after the first scan. PNG: every chunk's CRC through IEND (no inflating).
    Bytes after the end (what phones append: more metadata, a video) are fine. Other formats: the classifier's
    full decode tells."""
    if image.format == "PNG":
        # verify() must follow open() directly, and reading EXIF has already moved on: a fresh header parse.
        source.seek(0)
        try:
            with Image.open(source, formats=["PNG"]) as fresh:
                fresh.verify()
        except _VERIFY_ERRORS:
            return False
    elif image.format == "JPEG":
        return _contains(source, _JPEG_END, start=image.tile[0][2] if image.tile else 0)
    return True


def _contains(source: IO[bytes], marker: bytes, *, start: int) -> bool:
    """Whether `marker` occurs in `source` from offset `start`, read a chunk at a time. The last chunk is looked
    at first: an end marker is almost always there, so a complete photo costs one chunk, not a pass over it all."""
    end = source.seek(0, io.SEEK_END)
    source.seek(max(start, end - _SCAN_CHUNK_BYTES))
    if marker in source.read():
        return True
    source.seek(start)
    tail = b""
    while chunk := source.read(_SCAN_CHUNK_BYTES):
        if marker in tail + chunk:
            return True
        tail = chunk[-(len(marker) - 1) :]
    return False


def _taken(image: Image.Image) -> Taken:
    """The EXIF facts of an opened image; a damaged EXIF block costs the facts, never the upload."""
    try:
        return exif_taken(image.getexif())
    except Exception:  # Pillow raises many types on malformed EXIF (struct, value, key, OS errors)
        return Taken()


def clean_filename(raw: str, *, fallback_stem: str, extension: str) -> str:
    """A display name: the last path component, without quotes or invisible characters, at most 255 characters."""
    last = re.split(r"[/\\]", raw)[-1]
    name = "".join(c for c in last if c != '"' and not unicodedata.category(c).startswith(_INVISIBLE_CATEGORIES))
    name = name.strip()
    if name in ("", ".", ".."):
        name = f"{fallback_stem}.{extension}"
    return name[:MAX_FILENAME_CHARS]
