"""The CLI's folder walk picks up every format the server accepts: phones' HEIC files above all."""

from tagsmith_client.bulk import IMAGE_SUFFIXES, _importable

from services.common.imageformats import FORMATS


def test_a_folder_walk_picks_up_every_accepted_format():
    assert {f".{image_format.extension}" for image_format in FORMATS} <= IMAGE_SUFFIXES


def test_phone_photos_are_picked_up_whatever_the_case_of_their_suffix(tmp_path):
    for name in ("IMG_0001.HEIC", "IMG_0002.heif", "PXL_0003.AVIF", "IMG_0004.JPG"):
        (tmp_path / name).write_bytes(b"x")
        assert _importable(tmp_path / name, tmp_path), name
    (tmp_path / "notes.txt").write_bytes(b"x")
    assert not _importable(tmp_path / "notes.txt", tmp_path)
