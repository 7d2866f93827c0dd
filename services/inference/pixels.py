"""The model's pixel input made from an upright Pillow image: what the SavedModel's predict_pixels signature expects.

It repeats the SavedModel's own preprocessing (model/preprocess.py) after decoding: shrink by the largest integer
factor that keeps the short side >= IMAGE_SIZE, crop the full centre square, and resize it to IMAGE_SIZE with
TensorFlow's bicubic (Keys a = -0.5, half-pixel centres, no antialiasing). Pillow's own BICUBIC antialiases when it
downscales, so it blurs more than the graph; on real photos it changed the top-1 class of 10 % of the views against
serving_default, while this resize changed 2 % (model/README.md).
"""

import functools

import numpy as np
from PIL import Image

from services.common.model_contract import IMAGE_SIZE

KEYS_A = -0.5


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The full centre square as a (left, top, right, bottom) box, with the graph's offsets (odd margins round up)."""
    side = min(width, height)
    left, top = (width - side + 1) // 2, (height - side + 1) // 2
    return left, top, left + side, top + side


def keys_cubic(distance: np.ndarray) -> np.ndarray:
    """The Keys cubic convolution kernel with a = -0.5 at absolute distances below 2."""
    d = np.abs(distance)
    near = ((KEYS_A + 2) * d - (KEYS_A + 3)) * d * d + 1
    far = ((KEYS_A * d - 5 * KEYS_A) * d + 8 * KEYS_A) * d - 4 * KEYS_A
    return np.where(d <= 1, near, far)


@functools.lru_cache(maxsize=64)
def bicubic_taps(in_size: int, out_size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """TensorFlow's ResizeBicubic along one axis: the 4 input indices and float32 weights of each output index.

    Taps outside the image get weight 0 and the rest are renormalised, as TensorFlow does with the Keys kernel.
    """
    centres = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    taps = np.floor(centres).astype(np.int64)[:, None] + np.arange(-1, 3)
    weights = np.where((taps >= 0) & (taps < in_size), keys_cubic(centres[:, None] - taps), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(taps, 0, in_size - 1), weights.astype(np.float32)


def resize_bicubic(square: np.ndarray) -> np.ndarray:
    """float32 [side, side, 3] -> float32 [IMAGE_SIZE, IMAGE_SIZE, 3], rows then columns, 4 taps each."""
    taps, weights = bicubic_taps(square.shape[0])
    rows = sum(weights[:, k, None, None] * square[taps[:, k]] for k in range(4))
    return sum(weights[None, :, k, None] * rows[:, taps[:, k]] for k in range(4))


def shrink(image: Image.Image) -> Image.Image:
    """Box-downscaled by the largest integer factor keeping the short side >= IMAGE_SIZE, as the graph's area resize."""
    factor = max(min(image.size) // IMAGE_SIZE, 1)
    if factor == 1:
        return image
    return image.resize((image.width // factor, image.height // factor), Image.Resampling.BOX)


def to_model_pixels(image: Image.Image) -> np.ndarray:
    """An upright image -> uint8 RGB [IMAGE_SIZE, IMAGE_SIZE, 3]: its full centre square resized to the model input."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    image = shrink(image)
    box = centre_square(*image.size)
    square = np.asarray(image.crop(box), dtype=np.float32)
    return np.clip(np.rint(resize_bicubic(square)), 0, 255).astype(np.uint8)
