"""Decoding once: allowed formats, limits, truncation, orientation, reduced-scale decodes, pixels and thumbnails."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from services.common.imaging import register_openers
from services.inference.images import (
    MODEL_SIDE,
    DecodedImage,
    ImageDecoder,
    InvalidImage,
    jpeg_scale,
    reduce_to_rgb,
    shrink_factor,
    smallest_serving_size,
)
from tests.support.images import sample_image

FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "HEIF", "AVIF"]
ORIENTATION = 0x0112

register_openers()


def decoder(**overrides) -> ImageDecoder:
    return ImageDecoder(
        **{"max_pixels": 50_000_000, "large_decode_bytes": 48 << 20, "max_large_decodes": 1, **overrides}
    )


def decode(data: bytes, **overrides) -> DecodedImage:
    image_decoder = decoder(**overrides)
    return image_decoder.decode(image_decoder.plan(data))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels_of(decoded: DecodedImage) -> np.ndarray:
    return np.frombuffer(decoded.pixels, np.uint8).reshape(MODEL_SIDE, MODEL_SIDE, 3)


def sideways(image: Image.Image, fmt: str = "JPEG") -> bytes:
    """The image stored turned a quarter anticlockwise, with the EXIF orientation (6) that turns it back."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return encode(image.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif, quality=95)


@pytest.mark.parametrize("fmt", FORMATS)
def test_allowed_formats_decode_to_pixels_and_a_thumbnail(fmt):
    image = decode(sample_image("chelsea", fmt))
    assert (image.width, image.height, image.orientation) == (451, 300, 1)
    assert image.format == {"HEIF": "heic"}.get(fmt, fmt.lower())
    assert len(image.pixels) == MODEL_SIDE * MODEL_SIDE * 3
    thumbnail = Image.open(io.BytesIO(image.thumbnail))
    assert thumbnail.format == "JPEG" and image.thumbnail_format == "jpeg"
    assert thumbnail.size == (256, 170)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files_are_refused_with_a_message_a_person_understands(fmt):
    data = sample_image("chelsea", fmt)
    with pytest.raises(InvalidImage, match="truncated or corrupt; upload the complete file"):
        decode(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "HEIF"])
def test_a_complete_image_followed_by_extra_bytes_is_decoded(fmt):
    data = sample_image("chelsea", fmt)
    assert decode(data + b"\x00trailing bytes" * 100).pixels == decode(data).pixels


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"hello world", "not an image in a supported format"),
        (b"MM\x00*" + bytes(32), "TIFF"),
        (b"%PDF-1.7", "PDF"),
    ],
)
def test_unsupported_data_says_what_it_is(data, fragment):
    with pytest.raises(InvalidImage, match=fragment):
        decode(data)


def test_other_pillow_formats_are_not_opened():
    with pytest.raises(InvalidImage, match="TIFF images are not supported"):
        decode(encode(Image.new("RGB", (8, 8)), "TIFF"))


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(InvalidImage, match="megapixels"):
        decoder(max_pixels=451 * 300 - 1).plan(sample_image("chelsea", "PNG"))


def png_claiming(side: int) -> bytes:
    """A tiny PNG whose header claims side x side pixels (with a valid header checksum)."""
    data = encode(Image.new("L", (1, 1)), "PNG")
    header = b"IHDR" + side.to_bytes(4, "big") * 2 + data[24:29]
    return data[:12] + header + zlib.crc32(header).to_bytes(4, "big") + data[33:]


@pytest.mark.parametrize("side", [8000, 20000])
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(InvalidImage, match="megapixels"):
        decoder().plan(png_claiming(side))


# HEIC rotation lives in the container (irot/imir), which the decoder applies itself: its pixels come upright.
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF"])
def test_sideways_photos_are_turned_upright(fmt):
    upright = Image.open(io.BytesIO(sample_image("chelsea", "PNG"))).convert("RGB")
    image = decode(sideways(upright, fmt))
    assert (image.width, image.height, image.orientation) == (451, 300, 6)
    assert Image.open(io.BytesIO(image.thumbnail)).size == (256, 170)
    expected = pixels_of(decode(encode(upright, fmt, quality=95)))
    assert np.abs(pixels_of(image).astype(int) - expected).mean() < 3


def test_phone_jpeg_is_decoded_at_an_eighth_of_its_size():
    photo = Image.open(io.BytesIO(sample_image("chelsea", "PNG"))).convert("RGB").resize((4032, 3024))
    image_decoder = decoder()
    plan = image_decoder.plan(encode(photo, "JPEG", quality=90))
    assert (plan.dct_scale, plan.reduce_factor) == (8, 1)
    assert not image_decoder.is_large(plan)
    assert (image_decoder.decode(plan).width, plan.width) == (4032, 4032)


def phone_heic(thumbnail_side: int | None) -> tuple[bytes, Image.Image]:
    """A 12-megapixel HEIC stored sideways, with an embedded thumbnail of that long side (as phones write)."""
    photo = Image.open(io.BytesIO(sample_image("chelsea", "PNG"))).convert("RGB").resize((4032, 3024))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    thumbnails = [thumbnail_side] if thumbnail_side else []
    options = {"quality": 60, "exif": exif.tobytes(), "thumbnails": thumbnails, "enc_params": {"preset": "ultrafast"}}
    return encode(photo.transpose(Image.Transpose.ROTATE_90), "HEIF", **options), photo


def test_phone_heic_is_decoded_from_its_embedded_thumbnail():
    data, upright = phone_heic(320)
    image_decoder = decoder()
    plan = image_decoder.plan(data)
    assert plan.image.size == (320, 240)
    assert not image_decoder.is_large(plan)
    image = image_decoder.decode(plan)
    # The size reported is the image's own, upright. The pixels are near the full image's: the thumbnail went
    # through the HEVC encoder at the file's quality (60 here), which costs about 5 levels on average.
    assert (image.width, image.height) == (4032, 3024)
    assert Image.open(io.BytesIO(image.thumbnail)).size == (256, 192)
    expected = pixels_of(decode(encode(upright.resize((448, 336)), "PNG")))
    assert np.abs(pixels_of(image).astype(int) - expected).mean() < 8


def test_heic_thumbnail_too_small_for_the_model_is_not_used():
    data, _ = phone_heic(160)
    image_decoder = decoder()
    plan = image_decoder.plan(data)
    assert plan.image.size == (4032, 3024)
    assert plan.decode_bytes == 4032 * 3024 * 4
    image = image_decoder.decode(plan)
    assert (image.width, image.height) == (4032, 3024)


def test_smallest_serving_size_fills_the_model_input_and_the_thumbnail():
    assert smallest_serving_size(4032, 3024) == (299, 224)
    assert smallest_serving_size(3000, 600) == (1120, 224)
    assert smallest_serving_size(300, 290) == (256, 248)
    assert smallest_serving_size(200, 100) == (200, 100)


def test_scales_keep_the_model_input_and_the_thumbnail_sharp():
    assert shrink_factor(4032, 3024) == 13  # short side 3024 // 224; long side 4032 // 256 = 15
    assert jpeg_scale(4032, 3024) == 8
    assert jpeg_scale(1100, 700) == 2
    assert jpeg_scale(451, 300) == 1
    assert shrink_factor(7000, 7000) == 27


def test_tiny_png_at_the_pixel_limit_is_a_large_decode_reduced_in_strips():
    data = encode(Image.new("RGB", (7000, 7000)), "PNG", optimize=True)
    assert len(data) < 200_000
    image_decoder = decoder()
    plan = image_decoder.plan(data)
    assert image_decoder.is_large(plan) and plan.reduce_factor == 27
    image = image_decoder.decode(plan)
    assert (image.width, image.height) == (7000, 7000)
    assert not pixels_of(image).any()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16"])
def test_strip_reduction_matches_reducing_the_whole_image(mode):
    noise = Image.effect_noise((700, 1500), 80).convert("L")
    image = Image.merge("RGB", (noise, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise)).convert(mode)
    target = "RGBA" if mode == "RGBA" else "RGB"
    assert reduce_to_rgb(image, 3).tobytes() == image.convert(target).reduce(3).tobytes()


def test_transparent_images_get_png_thumbnails():
    image = decode(encode(Image.new("RGBA", (300, 200), (255, 0, 0, 0)), "PNG"))
    assert image.thumbnail_format == "png"
    assert Image.open(io.BytesIO(image.thumbnail)).mode == "RGBA"


def test_cmyk_jpeg_is_converted_for_the_model():
    rgb = Image.open(io.BytesIO(sample_image()))
    image = decode(encode(rgb.convert("CMYK"), "JPEG"))
    assert image.format == "jpeg" and image.thumbnail_format == "jpeg"
    assert np.abs(pixels_of(image).astype(int) - pixels_of(decode(encode(rgb, "JPEG")))).mean() < 8


def test_animated_gif_is_decoded_from_its_first_frame():
    frames = [Image.new("RGB", (300, 240), color) for color in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    pixels = pixels_of(decode(buffer.getvalue()))
    assert pixels[..., 0].min() > 200 and pixels[..., 2].max() < 50
