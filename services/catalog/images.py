"""What an uploaded file is: format, upright size, orientation and transparency, read by Pillow from the header."""

import re
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from services.common.imageformats import BY_PILLOW, DESCRIPTION, PILLOW_NAMES
from services.common.imaging import orientation_of, register_openers

MAX_FILENAME_CHARS = 255
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# Control and invisible characters, which can disguise a name (bidirectional overrides, zero-width marks):
# Unicode categories C* (control, format, private, unassigned) and Zl, Zp (line and paragraph separators).
_INVISIBLE_CATEGORIES = ("C", "Zl", "Zp")


class UnsupportedImage(ValueError):
    """Not an image this service accepts; the message says why."""


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

    @property
    def thumb_format(self) -> str:
        return "png" if self.has_alpha else "jpeg"


def inspect(source: BinaryIO, *, max_pixels: int) -> ImageInfo:
    """Reads the header only: detects the format from the bytes and enforces the pixel limit."""
    register_openers()
    source.seek(0)
    try:
        with Image.open(source, formats=PILLOW_NAMES) as image:
            width, height = image.size
            fmt, mode, transparent = image.format, image.mode, "transparency" in image.info
            orientation = orientation_of(image)
    except Image.DecompressionBombError:
        raise UnsupportedImage(f"the image has more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError):
        raise UnsupportedImage(f"not a supported image; send {DESCRIPTION}") from None
    if width < 1 or height < 1:
        raise UnsupportedImage("the image has no pixels")
    if width * height > max_pixels:
        raise UnsupportedImage(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels in total")
    image_format = BY_PILLOW[fmt]
    if orientation >= 5:
        width, height = height, width
    return ImageInfo(
        fmt,
        image_format.content_type,
        image_format.extension,
        width,
        height,
        orientation,
        mode in _ALPHA_MODES or transparent,
    )


def clean_filename(raw: str, *, fallback_stem: str, extension: str) -> str:
    """A display name: the last path component, without quotes or invisible characters, at most 255 characters."""
    last = re.split(r"[/\\]", raw)[-1]
    name = "".join(c for c in last if c != '"' and not unicodedata.category(c).startswith(_INVISIBLE_CATEGORIES))
    name = name.strip()
    if name in ("", ".", ".."):
        name = f"{fallback_stem}.{extension}"
    return name[:MAX_FILENAME_CHARS]
