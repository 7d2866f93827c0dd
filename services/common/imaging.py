"""Pillow helpers shared by the services that decode images: orientation, and shrinking in bounded memory."""

import functools
import math

from PIL import Image

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the turn that makes the pixels upright (what ImageOps.exif_transpose does, applied here
# to the reduced pixels, which no longer carry the EXIF block).
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# Source rows reduced at a time (rounded to the factor), so a full-size image is never copied whole while it shrinks.
_STRIP_ROWS = 256
# What reading EXIF can raise on a damaged block.
_EXIF_ERRORS = (OSError, SyntaxError, ValueError, TypeError)


def orientation_of(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except _EXIF_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation >= 5 else (width, height)


def turn_upright(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSES.get(orientation)
    return image if method is None else image.transpose(method)


def reduce_to_rgb(image: Image.Image, factor: int) -> Image.Image:
    """RGB (RGBA when transparent), box-reduced by `factor` a strip at a time: never a second full-size copy."""
    target = "RGBA" if image.mode in _ALPHA_MODES or "transparency" in image.info else "RGB"
    if factor == 1:
        return image.convert(target)
    size = (math.ceil(image.width / factor), math.ceil(image.height / factor))
    reduced = Image.new(target, size)
    step = factor * max(1, _STRIP_ROWS // factor)
    for top in range(0, image.height, step):
        strip = image.crop((0, top, image.width, min(top + step, image.height))).convert(target)
        reduced.paste(strip.reduce(factor), (0, top // factor))
    return reduced


@functools.cache
def register_openers() -> None:
    """Teaches Pillow to open HEIC/HEIF (AVIF is Pillow's own); call before opening uploads (it runs once)."""
    # Imported on first use: it adds a third of a second to a service's start.
    import pillow_heif

    # Thumbnails stay on: decoders pick a big enough embedded one through `draft` instead of the full image.
    pillow_heif.register_heif_opener(thumbnails=True, depth_images=False, aux_images=False)
