"""Download headers: safe Content-Disposition filenames and ETag matching."""

from urllib.parse import unquote

import pytest
from tagsmith.catalog.v1 import catalog_pb2

from services.gateway.downloads import content_disposition, etag_for, etag_matches, safe_filename


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cat.jpg", "cat.jpg"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ada\\cat.png", "cat.png"),
        ("evil\r\nSet-Cookie: x=1.png", "evilSet-Cookie: x=1.png"),
        ("\u202egnp.exe", "gnp.exe"),
        (".hidden.png", "hidden.png"),
        ("", "image.png"),
        ("/", "image.png"),
    ],
)
def test_safe_filename(name, expected):
    assert safe_filename(name, "image/png") == expected


def test_disposition_has_ascii_fallback_and_exact_utf8_name():
    header = content_disposition('chat "noir" ☕.jpg', "image/jpeg", attachment=True)
    assert header.startswith('attachment; filename="chat _noir_ _.jpg"; ')
    encoded = header.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == 'chat "noir" ☕.jpg'
    assert all(32 < ord(ch) < 127 for ch in encoded)


def test_inline_disposition_by_default():
    assert content_disposition("a.png", "image/png", attachment=False).startswith("inline;")


def test_etags():
    etag = etag_for("abc", None)
    assert etag == '"abc"'
    sizes = (catalog_pb2.THUMBNAIL_SIZE_SMALL, catalog_pb2.THUMBNAIL_SIZE_DISPLAY)
    assert len({etag, *(etag_for("abc", size) for size in sizes)}) == 3
    assert etag_matches('"zzz", W/"abc"', etag)
    assert etag_matches("*", etag)
    assert not etag_matches('"abd"', etag)
