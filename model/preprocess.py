"""In-graph decoding, center cropping, resizing and normalisation of encoded image files."""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from services.common.model_contract import IMAGE_SIZE

JPEG_RATIOS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Preprocessing:
    """How encoded images become model input; the defaults are what the SavedModel uses."""

    # EfficientNet-Lite was trained on (x - 127) / 128, not on ImageNet mean/std.
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    # TF's eval crop is 224/(224+32) of the short side; on test photos the full short side (1.0)
    # gave more, and more stable, correct top-1s (model/README.md), so the whole center square is kept.
    crop_fraction: float = 1.0
    resize_method: str = "bicubic"
    antialias: bool = False
    jpeg_downscale: bool = True
    # Box-filter big images down first so they are not aliased by the plain bicubic resize.
    shrink: bool = True

    @property
    def min_decoded_side(self) -> int:
        """Short side the decoded image needs so the crop is not upscaled."""
        return math.ceil(round(IMAGE_SIZE / self.crop_fraction, 6))


def jpeg_ratio_index(contents, min_side: int):
    """Index into JPEG_RATIOS of the largest DCT downscale that keeps the short side >= min_side."""
    shape = tf.image.extract_jpeg_shape(contents)
    short = tf.minimum(shape[0], shape[1])
    fits = [tf.cast(short // ratio >= min_side, tf.int32) for ratio in JPEG_RATIOS[1:]]
    return tf.add_n(fits)


def decode_jpeg_scaled(contents, min_side: int):
    branches = [lambda ratio=ratio: tf.io.decode_jpeg(contents, channels=3, ratio=ratio) for ratio in JPEG_RATIOS]
    return tf.switch_case(jpeg_ratio_index(contents, min_side), branches)


def decode(contents, config: Preprocessing = Preprocessing()):
    """Decodes one JPEG/PNG/GIF (first frame)/BMP/WebP file to uint8 [H, W, 3]."""

    def any_format():
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    if not config.jpeg_downscale:
        return any_format()
    image = tf.cond(tf.io.is_jpeg(contents), lambda: decode_jpeg_scaled(contents, config.min_decoded_side), any_format)
    return tf.ensure_shape(image, [None, None, 3])


def shrink(image, min_side: int):
    """uint8 [H, W, 3] -> float32, box-downscaled by the largest integer factor keeping short side >= min_side."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    factor = tf.maximum(tf.minimum(height, width) // min_side, 1)
    pixels = tf.cast(image, tf.float32)
    return tf.cond(
        factor > 1,
        lambda: tf.image.resize(pixels, [height // factor, width // factor], method="area"),
        lambda: pixels,
    )


def center_crop(image, fraction: float):
    """Square center crop with the short side scaled by fraction (TF EfficientNet's offsets)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    side = tf.maximum(side, 1)
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    return image[top : top + side, left : left + side]


def to_model_input(image, config: Preprocessing = Preprocessing()):
    """uint8 [H, W, 3] -> normalised float32 [224, 224, 3]."""
    pixels = shrink(image, config.min_decoded_side) if config.shrink else tf.cast(image, tf.float32)
    crop = center_crop(pixels, config.crop_fraction)
    resized = tf.image.resize(crop, [IMAGE_SIZE, IMAGE_SIZE], method=config.resize_method, antialias=config.antialias)
    return tf.ensure_shape(normalise(resized, config), [IMAGE_SIZE, IMAGE_SIZE, 3])


def normalise(pixels, config: Preprocessing = Preprocessing()):
    """float32 RGB values in [0, 255] -> the network's input range."""
    return (pixels - tf.constant(config.mean)) / tf.constant(config.std)


def preprocess_batch(images, config: Preprocessing = Preprocessing()):
    """tf.string [N] of encoded files -> float32 [N, 224, 224, 3]."""
    return tf.map_fn(
        lambda contents: to_model_input(decode(contents, config), config),
        images,
        fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32),
    )
