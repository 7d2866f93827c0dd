"""Thumbnails of images classified before inference sent them (at most 256 px on the long side), and display copies
(at most 1600 px) for browsers that cannot show the original; upright.

JPEG, or PNG when the image has transparency. Decoded at reduced scale where the format allows (JPEG DCT scaling),
and shrunk a strip at a time otherwise, so a full-size decode is the only full-size buffer.
"""

import io
import math
from typing import IO

from PIL import Image

from services.catalog.content import THUMB_SIZE, THUMB_TYPES
from services.common.imageformats import PILLOW_NAMES
from services.common.imaging import orientation_of, reduce_to_rgb, register_openers, turn_upright

CONTENT_TYPES = THUMB_TYPES
_JPEG_QUALITY = 85
_JPEG_SCALES = (8, 4, 2)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, RuntimeError)


class Undecodable(ValueError):
    """The stored image's header was readable but its pixels are not (e.g. a truncated file)."""


def render(source: IO[bytes], thumb_format: str, size: int = THUMB_SIZE) -> bytes:
    """Decodes the original (at reduced scale where possible) and returns the encoded thumbnail, at most `size`
    pixels on the long side."""
    register_openers()
    source.seek(0)
    try:
        with Image.open(source, formats=PILLOW_NAMES) as image:
            orientation = orientation_of(image)
            factor = max(1, max(image.size) // size)
            scale = next((s for s in _JPEG_SCALES if factor >= s), 1) if image.format == "JPEG" else 1
            if scale > 1:
                image.draft("RGB", (image.width // scale, image.height // scale))
            elif image.format == "HEIF" and factor > 1:
                # An embedded thumbnail at least `size` on the long side, when the file has one.
                image.draft(image.mode, (math.ceil(image.width / factor), math.ceil(image.height / factor)))
            image.load()
            reduced = reduce_to_rgb(image, max(1, max(image.size) // size))
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
        raise Undecodable(str(exc)) from None
    upright = turn_upright(reduced, orientation)
    upright.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if thumb_format == "png":
        upright.convert("RGBA").save(out, format="PNG", optimize=True)
    else:
        upright.convert("RGB").save(out, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    return out.getvalue()
