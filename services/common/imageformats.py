"""The image formats Tagsmith accepts: the one table inference, the catalog, /v1/limits and the page all read."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    """One accepted format: Pillow's name for it, the name Classify reports, its MIME type and file extension."""

    pillow: str
    name: str
    content_type: str
    extension: str
    # Other MIME types browsers give such files (a page checks a file's type before sending it).
    aliases: tuple[str, ...] = ()


FORMATS = (
    ImageFormat("JPEG", "jpeg", "image/jpeg", "jpg"),
    ImageFormat("PNG", "png", "image/png", "png"),
    ImageFormat("WEBP", "webp", "image/webp", "webp"),
    ImageFormat("GIF", "gif", "image/gif", "gif"),
    ImageFormat("BMP", "bmp", "image/bmp", "bmp"),
    # pillow-heif names every HEIF file "HEIF"; phones write HEVC-coded ones, which are HEIC.
    ImageFormat("HEIF", "heic", "image/heic", "heic", aliases=("image/heif",)),
    ImageFormat("AVIF", "avif", "image/avif", "avif"),
)
BY_PILLOW = {image_format.pillow: image_format for image_format in FORMATS}
PILLOW_NAMES = tuple(BY_PILLOW)
# Every MIME type an accepted file may arrive with, canonical ones first.
CONTENT_TYPES = tuple(f.content_type for f in FORMATS) + tuple(alias for f in FORMATS for alias in f.aliases)
EXTENSIONS = {f.content_type: f.extension for f in FORMATS}
DESCRIPTION = "JPEG, PNG, WebP, GIF, BMP, HEIC or AVIF"


def opened_as(pillow_name: str | None) -> ImageFormat:
    """The accepted format of an image Pillow opened with formats=PILLOW_NAMES, which always names one of them."""
    found = BY_PILLOW.get(pillow_name or "")
    if found is None:
        raise ValueError(f"Pillow opened an image as {pillow_name!r}, which is not an accepted format")
    return found
