"""Trash, ZIP downloads, the web page's cookie session and /docs headers, through the app against fake backends."""

import io
import tracemalloc
import zipfile
from datetime import datetime

from services.gateway.archive import ZipStream, dos_datetime, unique_names
from tests.unit.test_gateway_routes import PNG, sign_in, upload

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(200)) * 30


async def test_delete_moves_to_trash_and_restore_brings_back(gateway):
    headers = await sign_in(gateway)
    uid = (await upload(gateway, headers, ("a.png", PNG))).json()["uid"]
    assert (await gateway.delete(f"/v1/images/{uid}", headers=headers)).status_code == 204
    assert (await gateway.get(f"/v1/images/{uid}", headers=headers)).status_code == 404
    trash = (await gateway.get("/v1/trash", headers=headers)).json()
    assert [i["uid"] for i in trash["images"]] == [uid] and trash["retention_days"] == 30
    assert trash["images"][0]["deleted_at"]
    restored = await gateway.post(f"/v1/images/{uid}/restore", headers=headers)
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert (await gateway.get(f"/v1/images/{uid}", headers=headers)).status_code == 200
    again = await gateway.post(f"/v1/images/{uid}/restore", headers=headers)
    assert again.status_code == 404 and "not in the trash" in again.json()["error"]["message"]
    assert (await gateway.get("/v1/trash")).status_code == 401


async def test_archive_streams_one_zip_of_the_originals(gateway):
    headers = await sign_in(gateway)
    files = [("beach.png", PNG), ("beach.png", PNG[:-7]), ("dir/x.jpg", JPEG)]
    uids = [(await upload(gateway, headers, item)).json()["uid"] for item in files]
    reply = await gateway.post("/v1/images/archive", headers=headers, json={"uids": [*uids, uids[0]]})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/zip"
    assert reply.headers["content-disposition"].startswith('attachment; filename="photos-')
    archive = zipfile.ZipFile(io.BytesIO(reply.content))
    assert archive.testzip() is None
    assert archive.namelist() == ["beach.png", "beach (2).png", "x.jpg"]
    assert [archive.read(name) for name in archive.namelist()] == [data for _, data in files]


async def test_archive_refuses_missing_images_and_oversized_requests(gateway):
    headers = await sign_in(gateway)
    uid = (await upload(gateway, headers, ("a.png", PNG))).json()["uid"]
    missing = await gateway.post("/v1/images/archive", headers=headers, json={"uids": [uid, "nope"]})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
    other = await sign_in(gateway, "bob")
    assert (await gateway.post("/v1/images/archive", headers=other, json={"uids": [uid]})).status_code == 404
    many = await gateway.post("/v1/images/archive", headers=headers, json={"uids": [uid] * 101})
    assert many.status_code == 400
    assert (await gateway.post("/v1/images/archive", headers=headers, json={"uids": []})).status_code == 400


async def test_cookie_session_keeps_the_refresh_token_out_of_scripts(gateway, fake_backends):
    _, recorded = fake_backends
    await gateway.post("/v1/auth/register", json={"username": "ada", "password": "password123"})
    login = await gateway.post("/v1/auth/login?cookie=true", json={"username": "ada", "password": "password123"})
    assert login.status_code == 200 and login.json()["refresh_token"] == "" and login.json()["access_token"]
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("tagsmith_refresh=r-1;")
    for attribute in ("HttpOnly", "Path=/v1/auth", "SameSite=strict", "Max-Age=3600"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back

    refreshed = await gateway.post("/v1/auth/refresh")
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"] == ""
    assert refreshed.headers["set-cookie"].startswith("tagsmith_refresh=r-2;")

    access = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    logout = await gateway.post("/v1/auth/logout", headers=access)
    assert logout.status_code == 204 and recorded.logouts == ["r-2"]
    assert 'tagsmith_refresh=""' in logout.headers["set-cookie"] and "Max-Age=0" in logout.headers["set-cookie"]
    gone = await gateway.post("/v1/auth/refresh")
    assert gone.status_code == 401 and "sign in again" in gone.json()["error"]["message"]


async def test_cookie_is_secure_over_tls_and_body_tokens_still_work(gateway_factory):
    gateway = await gateway_factory()
    gateway.base_url = "https://gateway.test"
    await gateway.post("/v1/auth/register", json={"username": "ada", "password": "password123"})
    login = await gateway.post("/v1/auth/login?cookie=true", json={"username": "ada", "password": "password123"})
    assert "Secure" in login.headers["set-cookie"]
    plain = await gateway.post("/v1/auth/login", json={"username": "ada", "password": "password123"})
    assert plain.json()["refresh_token"] == "r-1" and "set-cookie" not in plain.headers
    body = await gateway.post("/v1/auth/refresh", json={"refresh_token": "r-1"})
    assert body.json()["refresh_token"] == "r-2" and "set-cookie" not in body.headers


async def test_docs_carry_the_pages_security_headers(gateway):
    page, docs = await gateway.get("/"), await gateway.get("/docs")
    for header in ("content-security-policy", "x-frame-options", "cache-control"):
        assert docs.headers[header] == page.headers[header]
    assert "<script>" not in docs.text and "/static/docs.js" in docs.text
    assert (await gateway.get("/static/docs.js")).status_code == 200


def test_archive_names_never_hide_each_other_and_old_dates_clamp():
    names = ["a.jpg", "A.jpg", "a.jpg", "notes", "notes", ".hidden"]
    assert unique_names(names) == ["a.jpg", "A (2).jpg", "a (3).jpg", "notes", "notes (2)", ".hidden"]
    assert dos_datetime(datetime(1970, 1, 1, 0, 0, 0)) == (0, (0 << 9) | (1 << 5) | 1)
    assert dos_datetime(datetime(2024, 5, 6, 7, 8, 9)) == ((7 << 11) | (8 << 5) | 4, (44 << 9) | (5 << 5) | 6)


async def test_archive_writer_holds_no_archive_in_memory():
    """200 MiB through the writer: what it allocates stays under 1 MiB (one entry record per file)."""
    chunk = bytes(range(256)) * 4096

    async def chunks():
        for _ in range(4):
            yield chunk

    tracemalloc.start()
    try:
        stream, total = ZipStream(), 0
        for n in range(50):
            async for piece in stream.entry(f"photo-{n}.jpg", datetime(2024, 1, 1), chunks()):
                total += len(piece)
        total += len(stream.end())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total > 200 * 1024 * 1024
    assert peak < 1024 * 1024
