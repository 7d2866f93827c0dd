"""Format detection from the bytes, limits read from the header, display names, thumbnails and object keys."""

import io
from datetime import UTC, datetime

import pytest
from PIL import Image

from services.catalog import content, images, thumbnails
from services.common.imaging import register_openers
from tests.support.images import image_bytes


@pytest.mark.parametrize(
    ("fmt", "mode", "content_type", "alpha"),
    [
        ("JPEG", "RGB", "image/jpeg", False),
        ("PNG", "RGBA", "image/png", True),
        ("PNG", "RGB", "image/png", False),
        ("WEBP", "RGB", "image/webp", False),
        ("GIF", "P", "image/gif", False),
        ("BMP", "RGB", "image/bmp", False),
        ("HEIF", "RGB", "image/heic", False),
        ("AVIF", "RGB", "image/avif", False),
    ],
)
def test_detects_supported_formats(fmt, mode, content_type, alpha):
    register_openers()
    color = 3 if mode == "P" else (10, 20, 30, 128)[: len(mode)]
    info = images.inspect(io.BytesIO(image_bytes(color, (40, 30), fmt, mode)), max_pixels=10_000)
    assert (info.content_type, info.width, info.height, info.has_alpha) == (content_type, 40, 30, alpha)
    assert info.thumb_format == ("png" if alpha else "jpeg")


@pytest.mark.parametrize("data", [b"hello world", b"\x89PNG\r\n\x1a\n broken", b"GIF89a", b"%PDF-1.7\n"])
def test_rejects_non_images(data):
    with pytest.raises(images.UnsupportedImage, match="JPEG, PNG, WebP, GIF, BMP, HEIC or AVIF"):
        images.inspect(io.BytesIO(data), max_pixels=10_000)


def test_rejects_unsupported_format_even_if_pillow_reads_it():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="TIFF")
    with pytest.raises(images.UnsupportedImage):
        images.inspect(out, max_pixels=10_000)


def test_pixel_limit_uses_the_header():
    data = image_bytes(size=(200, 100))
    assert images.inspect(io.BytesIO(data), max_pixels=20_000).width == 200
    with pytest.raises(images.UnsupportedImage, match="200x100 pixels; the limit is 19999"):
        images.inspect(io.BytesIO(data), max_pixels=19_999)


def test_clean_filename_keeps_only_a_display_name():
    assert images.clean_filename("../../etc/passwd", fallback_stem="u", extension="jpg") == "passwd"
    assert images.clean_filename("C:\\photos\\cat.png", fallback_stem="u", extension="png") == "cat.png"
    assert images.clean_filename('a"b\r\nc.jpg', fallback_stem="u", extension="jpg") == "abc.jpg"
    assert images.clean_filename("..", fallback_stem="u1", extension="gif") == "u1.gif"
    assert len(images.clean_filename("x" * 400, fallback_stem="u", extension="jpg")) == 255


def test_clean_filename_drops_invisible_characters_that_disguise_a_name():
    # A right-to-left override shows "invoice\u202egpj.exe" as "invoiceexe.jpg" in a download prompt.
    assert images.clean_filename("invoice\u202egpj.exe", fallback_stem="u", extension="jpg") == "invoicegpj.exe"
    assert images.clean_filename("a\u200bb\u2028c\ufeff.png", fallback_stem="u", extension="png") == "abc.png"
    assert images.clean_filename("\u202e", fallback_stem="u2", extension="png") == "u2.png"
    assert images.clean_filename("café 写真.jpg", fallback_stem="u", extension="jpg") == "café 写真.jpg"


def test_thumbnail_is_at_most_256_and_upright():
    source = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (1000, 400), (0, 128, 0)).save(source, format="JPEG", exif=exif)
    data = thumbnails.render(source, "jpeg")
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (102, 256)


def test_sideways_photo_reports_its_upright_size_and_orientation():
    source = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (1000, 400)).save(source, format="JPEG", exif=exif)
    info = images.inspect(source, max_pixels=1_000_000)
    assert (info.width, info.height, info.orientation) == (400, 1000, 6)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_get_thumbnails(fmt):
    register_openers()
    data = thumbnails.render(io.BytesIO(image_bytes((200, 10, 10), (600, 300), fmt, "RGB")), "jpeg")
    with Image.open(io.BytesIO(data)) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (256, 128))
        assert thumb.getpixel((128, 64))[0] > 150


def test_heic_thumbnail_is_made_from_the_embedded_one_when_big_enough():
    register_openers()
    source = io.BytesIO()
    Image.new("RGB", (1200, 600), (20, 200, 20)).save(source, "HEIF", thumbnails=[300])
    data = thumbnails.render(source, "jpeg")
    with Image.open(io.BytesIO(data)) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (256, 128))
        assert thumb.getpixel((128, 64))[1] > 150


def test_display_copy_is_at_most_1600_and_upright():
    source = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (4000, 1600), (0, 128, 0)).save(source, format="JPEG", exif=exif)
    with Image.open(io.BytesIO(thumbnails.render(source, "jpeg", content.DISPLAY_SIZE))) as shown:
        assert (shown.format, shown.size) == ("JPEG", (640, 1600))


def test_heic_display_copy_is_decoded_from_the_image_not_its_small_embedded_thumbnail():
    register_openers()
    source = io.BytesIO()
    Image.new("RGB", (3200, 2400), (20, 20, 200)).save(source, "HEIF", thumbnails=[320])
    with Image.open(io.BytesIO(thumbnails.render(source, "jpeg", content.DISPLAY_SIZE))) as shown:
        assert shown.size == (1600, 1200)
        assert shown.getpixel((800, 600))[2] > 150


def test_thumbnail_of_a_tiny_png_at_the_pixel_limit_is_made_in_strips():
    source = io.BytesIO()
    Image.new("P", (7000, 7000)).save(source, format="PNG", optimize=True)
    data = thumbnails.render(source, "jpeg")
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == (256, 256)


def test_thumbnail_keeps_transparency_as_png():
    data = thumbnails.render(io.BytesIO(image_bytes((0, 0, 0, 0), (300, 300), "PNG", "RGBA")), "png")
    with Image.open(io.BytesIO(data)) as thumb:
        assert (thumb.format, thumb.mode, thumb.size) == ("PNG", "RGBA", (256, 256))
        assert thumb.getpixel((5, 5))[3] == 0


def test_object_keys_come_from_a_validated_hash_only():
    sha = "ab" * 32
    assert content.original_key(sha) == f"objects/{sha}"
    assert content.thumbnail_key(sha, "png") == f"thumbs/{sha}-256.png"
    assert content.thumbnail_key(sha, "jpeg", content.DISPLAY_SIZE) == f"thumbs/{sha}-1600.jpg"
    assert content.hash_of(f"thumbs/{sha}-1600.jpg") == sha
    with pytest.raises(ValueError, match="no thumbnail size"):
        content.thumbnail_key(sha, "jpeg", 999)
    assert content.hash_of(f"thumbs/{sha}-256.jpg") == sha
    assert content.hash_of(f"objects/{sha}") == sha
    assert content.hash_of("objects/not-a-hash") is None
    with pytest.raises(ValueError, match="not a hex SHA-256"):
        content.original_key("../" + sha[3:])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_file_cut_short_is_refused_as_truncated(fmt):
    noisy = Image.effect_noise((300, 200), 60).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, format=fmt)
    data = out.getvalue()
    with pytest.raises(images.UnsupportedImage, match="the image is truncated or corrupt; upload the complete file"):
        images.inspect(io.BytesIO(data[: len(data) // 2]), max_pixels=10**6)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_bytes_after_a_complete_image_are_fine(fmt):
    """Phones append metadata, even a video, after the image itself."""
    data = image_bytes(size=(300, 200), fmt=fmt) + b"\x00" * 5000 + b"MotionPhoto_Data" + bytes(range(256)) * 8
    assert images.inspect(io.BytesIO(data), max_pixels=10**6).width == 300


def test_the_jpeg_end_marker_is_found_across_read_chunks(monkeypatch):
    monkeypatch.setattr(images, "_SCAN_CHUNK_BYTES", 7)
    data = image_bytes(size=(64, 48))
    assert images.inspect(io.BytesIO(data), max_pixels=10**6).width == 64
    with pytest.raises(images.UnsupportedImage, match="truncated"):
        images.inspect(io.BytesIO(data[:-2]), max_pixels=10**6)


def _with_exif(fmt: str = "JPEG", **tags) -> io.BytesIO:
    exif = Image.Exif()
    for key, value in tags.items():
        if key in ("make", "model"):
            exif[{"make": 271, "model": 272}[key]] = value
        else:
            exif.get_ifd(0x8769)[{"taken": 36867, "offset": 36881}[key]] = value
    data = io.BytesIO()
    Image.new("RGB", (8, 6)).save(data, fmt, exif=exif)
    return data


def test_exif_date_and_camera_are_read_from_the_header():
    taken = images.inspect(
        _with_exif(make="Canon", model="EOS 5D\x00", taken="2021:07:04 15:30:00", offset="+02:00"), max_pixels=100
    ).taken
    assert taken.at == datetime(2021, 7, 4, 13, 30, tzinfo=UTC)
    assert (taken.camera_make, taken.camera_model) == ("Canon", "EOS 5D")
    assert images.inspect(_with_exif(taken="2020:01:02 03:04:05"), max_pixels=100).taken.at == datetime(
        2020, 1, 2, 3, 4, 5, tzinfo=UTC
    )


@pytest.mark.parametrize("raw", ["    :  :     :  :  ", "2021:13:40 99:00:00", "yesterday"])
def test_a_missing_or_malformed_exif_date_is_no_date(raw):
    assert images.inspect(_with_exif(taken=raw, make="Nikon"), max_pixels=100).taken.at is None


def test_files_without_exif_have_no_taken_facts():
    data = io.BytesIO()
    Image.new("RGB", (8, 6)).save(data, "PNG")
    assert images.inspect(data, max_pixels=100).taken == images.Taken()
