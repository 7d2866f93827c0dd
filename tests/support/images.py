"""Images for tests: small generated ones, and scikit-image's real photographs encoded in any format."""

import io

from PIL import Image


def image_bytes(color=(200, 30, 30), size=(64, 48), fmt="JPEG", mode="RGB") -> bytes:
    """A small real image; different colours give different bytes."""
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format=fmt)
    return out.getvalue()


def sample_image(name: str = "chelsea", fmt: str = "JPEG", **save_options) -> bytes:
    """scikit-image's sample photos encoded as `fmt`: "chelsea" is a cat, "coffee" a cup of espresso."""
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, fmt, **save_options)
    return buffer.getvalue()


def group_photo(fmt: str = "JPEG") -> bytes:
    """Two people side by side: scikit-image's astronaut and her mirror image, each 512x512."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 0))
    buffer = io.BytesIO()
    pair.save(buffer, fmt, quality=95)
    return buffer.getvalue()


def sideways(data: bytes, fmt: str = "JPEG") -> bytes:
    """The photo stored turned a quarter anticlockwise, with the EXIF orientation (6) that turns it back."""

    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_90).save(buffer, fmt, exif=exif, quality=95)
    return buffer.getvalue()
