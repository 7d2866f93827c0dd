"""Thumbnails: at most 256 px on the long side, upright, JPEG (or PNG when the image has transparency)."""

import io
from typing import BinaryIO

from PIL import Image, ImageOps

from services.catalog.content import THUMB_SIZE

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
_JPEG_QUALITY = 85


class Undecodable(ValueError):
    """The stored image's header was readable but its pixels are not (e.g. a truncated file)."""


def render(source: BinaryIO, thumb_format: str) -> bytes:
    """Decodes the original (only as much as needed for JPEG) and returns the encoded thumbnail."""
    source.seek(0)
    try:
        with Image.open(source) as image:
            image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise Undecodable(str(exc)) from None
    out = io.BytesIO()
    if thumb_format == "png":
        upright.convert("RGBA").save(out, format="PNG", optimize=True)
    else:
        upright.convert("RGB").save(out, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    return out.getvalue()
