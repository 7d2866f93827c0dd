"""The model's pixel input made with Pillow: what the SavedModel's predict_pixels signature expects from its caller."""

import numpy as np
from PIL import Image

from services.common.model_contract import IMAGE_SIZE

# Chosen by measuring against the graph's own decode, shrink, crop and bicubic resize (model/README.md).
RESAMPLE = Image.Resampling.BICUBIC


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The full centre square as a (left, top, right, bottom) box, with the graph's offsets (odd margins round up)."""
    side = min(width, height)
    left, top = (width - side + 1) // 2, (height - side + 1) // 2
    return left, top, left + side, top + side


def to_model_pixels(image: Image.Image, *, resample: Image.Resampling = RESAMPLE) -> np.ndarray:
    """An upright image -> uint8 RGB [IMAGE_SIZE, IMAGE_SIZE, 3]: its full centre square resized to the model input."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    box = centre_square(*image.size)
    resized = image.resize((IMAGE_SIZE, IMAGE_SIZE), resample, box=box)
    return np.asarray(resized, dtype=np.uint8)
