"""Real photographs shipped with scikit-image, read as the original file bytes."""

from pathlib import Path

import skimage.data

_DIR = Path(skimage.data.__file__).parent


def photo(name: str) -> bytes:
    """E.g. photo("chelsea.png") (a tabby cat), photo("coffee.png"), photo("rocket.jpg")."""
    return (_DIR / name).read_bytes()
