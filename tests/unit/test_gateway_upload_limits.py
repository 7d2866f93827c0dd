"""A request over any of its limits stores nothing: the form is received and checked before the first file is sent."""

from tests.support.gateway_fixtures import FAKE_MAX_BYTES

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def _headers(test_keys) -> dict:
    return {"Authorization": f"Bearer {test_keys.token('id-ada', name='ada')}"}


def _files(count: int) -> list:
    return [
        ("image", (f"{index}.png", PNG + bytes([index % 256, index // 256]), "image/png")) for index in range(count)
    ]


async def test_one_file_over_the_count_stores_none(gateway, fake_backends, test_keys):
    _, recorded = fake_backends
    reply = await gateway.post("/v1/images", headers=_headers(test_keys), files=_files(21))
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "send at most 20 files per request; nothing was stored"
    assert recorded.images == {} and recorded.upload_chunks == []


async def test_the_full_count_is_stored(gateway, fake_backends, test_keys):
    _, recorded = fake_backends
    reply = await gateway.post("/v1/images", headers=_headers(test_keys), files=_files(20))
    assert reply.status_code == 201
    assert len(reply.json()["images"]) == 20 and len(recorded.images) == 20


async def test_a_late_file_over_the_size_limit_stores_none(gateway, fake_backends, test_keys):
    _, recorded = fake_backends
    files = [*_files(3), ("image", ("huge.png", PNG + bytes(FAKE_MAX_BYTES), "image/png"))]
    reply = await gateway.post("/v1/images", headers=_headers(test_keys), files=files)
    assert reply.status_code == 413
    assert reply.json()["error"]["message"].startswith("huge.png is larger than the limit")
    assert "nothing was stored" in reply.json()["error"]["message"]
    assert recorded.images == {}


async def test_a_body_that_ends_mid_file_stores_none(gateway, fake_backends, test_keys):
    _, recorded = fake_backends
    headers = _headers(test_keys) | {"Content-Type": "multipart/form-data; boundary=b"}
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + PNG + b"\r\n"
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="b.png"\r\n\r\n' + PNG[:100]
    )
    reply = await gateway.post("/v1/images", headers=headers, content=body)
    assert reply.status_code == 400
    assert recorded.images == {}


async def test_a_file_the_catalog_refuses_is_reported_and_the_others_stored(gateway, fake_backends, test_keys):
    """Content the catalog refuses (not a per-request limit) is reported per file, as before."""
    _, recorded = fake_backends
    files = [*_files(2), ("image", ("notes.txt", b"hello", "text/plain"))]
    reply = await gateway.post("/v1/images", headers=_headers(test_keys), files=files)
    assert reply.status_code == 201
    assert [e["filename"] for e in reply.json()["errors"]] == ["notes.txt"]
    assert len(recorded.images) == 2


async def test_me_shows_the_storage_quota(gateway, fake_backends, test_keys):
    _, recorded = fake_backends
    recorded.quota_bytes, recorded.quota_images = 1_000_000, 10
    await gateway.post("/v1/images", headers=_headers(test_keys), files=_files(2))
    me = (await gateway.get("/v1/me", headers=_headers(test_keys))).json()
    assert me["storage"] == {
        "bytes_used": 2 * (len(PNG) + 2),
        "bytes_limit": 1_000_000,
        "images_used": 2,
        "images_limit": 10,
    }


async def test_an_upload_over_the_quota_is_403_with_the_catalogs_words(gateway, fake_backends, test_keys):
    _, recorded = fake_backends
    recorded.quota_images = 1
    assert (await gateway.post("/v1/images", headers=_headers(test_keys), files=_files(1))).status_code == 201
    reply = await gateway.post("/v1/images", headers=_headers(test_keys), files=_files(2)[1:])
    assert reply.status_code == 403
    assert reply.json()["error"] | {"request_id": None} == {
        "code": "quota_exceeded",
        "message": "storage quota exceeded",
        "request_id": None,
    }


async def test_a_batch_that_cannot_fit_the_quota_stores_none(gateway, fake_backends, test_keys):
    _, recorded = fake_backends
    recorded.quota_images = 3
    reply = await gateway.post("/v1/images", headers=_headers(test_keys), files=_files(4))
    assert reply.status_code == 403
    assert reply.json()["error"]["message"] == (
        "storage quota exceeded: you have 0 of 3 images and sent 4 more; nothing was stored"
    )
    assert recorded.images == {}
