"""The /v1 API through the app, against fake backends on a real gRPC server."""

import pytest

from tests.support.gateway_fixtures import FAKE_CHUNK_BYTES, FAKE_MAX_BYTES

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
MIB = 1024 * 1024


async def sign_in(gateway, username: str = "ada") -> dict:
    await gateway.post("/v1/auth/register", json={"username": username, "password": "password123"})
    reply = await gateway.post("/v1/auth/login", json={"username": username, "password": "password123"})
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


async def upload(gateway, headers, *files: tuple[str, bytes]):
    return await gateway.post("/v1/images", headers=headers, files=[("image", (n, d, "image/png")) for n, d in files])


async def test_register_login_me(gateway, fake_backends):
    created = await gateway.post("/v1/auth/register", json={"username": "ada", "password": "password123"})
    assert created.status_code == 201
    assert created.json()["username"] == "ada"
    login = await gateway.post("/v1/auth/login", json={"username": "ada", "password": "password123"})
    assert login.status_code == 200
    assert login.json()["token_type"] == "Bearer"
    me = await gateway.get("/v1/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert (me.status_code, me.json()["id"]) == (200, "id-ada")
    _, recorded = fake_backends
    register, login = recorded.auth_requests
    assert (register.client_address, register.public_api) == ("203.0.113.7", True)
    assert (login.client_address, login.public_api) == ("203.0.113.7", True)


async def test_duplicate_username_is_409(gateway):
    await gateway.post("/v1/auth/register", json={"username": "ada", "password": "password123"})
    again = await gateway.post("/v1/auth/register", json={"username": "ada", "password": "password123"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_exists"


async def test_login_lockout_is_429_with_retry_after(gateway):
    reply = await gateway.post("/v1/auth/login", json={"username": "locked", "password": "whatever1"})
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "42"


async def test_missing_or_malformed_token_is_401(gateway):
    missing = await gateway.get("/v1/images")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "unauthenticated"
    bad = await gateway.get("/v1/images", headers={"Authorization": "Bearer not a token\u00e9".encode()})
    assert bad.status_code == 401
    forged = await gateway.get("/v1/images", headers={"Authorization": "Bearer abc.def.ghi"})
    assert forged.status_code == 401


async def test_validation_errors_are_400_in_the_one_shape(gateway, test_keys):
    reply = await gateway.get("/v1/images?page_size=1000", headers={"Authorization": f"Bearer {test_keys.token()}"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_argument"
    assert "page_size" in reply.json()["error"]["message"]


async def test_upload_streams_in_bounded_chunks_and_returns_the_image(gateway, fake_backends):
    headers = await sign_in(gateway)
    reply = await upload(gateway, headers, ("cat.png", PNG))
    assert reply.status_code == 201
    image = reply.json()
    assert (image["category"], image["size"], image["status"]) == ("tabby", len(PNG), "classified")
    assert image["labels"][0] == {
        "label": "tabby",
        "class_id": 281,
        "score": pytest.approx(0.9),
        "rank": 1,
        "source": "model",
    }
    _, recorded = fake_backends
    assert sum(recorded.upload_chunks) == len(PNG)
    assert recorded.metadata[-1]["authorization"] == headers["Authorization"]


async def test_several_files_answer_a_batch_with_refusals(gateway):
    headers = await sign_in(gateway)
    reply = await upload(gateway, headers, ("a.png", PNG), ("notes.txt", b"hello"), ("b.png", PNG + b"!"))
    assert reply.status_code == 201
    body = reply.json()
    assert [image["filename"] for image in body["images"]] == ["a.png", "b.png"]
    assert body["errors"][0]["filename"] == "notes.txt"
    assert body["errors"][0]["error"]["code"] == "invalid_argument"


async def test_single_invalid_file_is_400(gateway):
    reply = await upload(gateway, await sign_in(gateway), ("notes.txt", b"hello"))
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "not a supported image"


async def test_non_multipart_upload_is_415(gateway):
    reply = await gateway.post("/v1/images", headers=await sign_in(gateway), json={"image": "x"})
    assert reply.status_code == 415


async def test_announced_oversize_body_is_413_before_reading(gateway_factory):
    gateway = await gateway_factory()
    headers = await sign_in(gateway)
    pulled = []

    async def body():
        for _ in range(1000):
            pulled.append(1)
            yield b"\0" * 65536

    headers |= {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(1000 * 65536)}
    reply = await gateway.post("/v1/images", headers=headers, content=body())
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "payload_too_large"
    assert len(pulled) <= 1


async def test_oversize_file_without_length_is_413_while_streaming(gateway, fake_backends):
    headers = await sign_in(gateway)
    sent = []

    async def body():
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n\x89PNG'
        for _ in range(200):
            sent.append(1)
            yield b"\0" * 8192
        yield b"\r\n--b--\r\n"

    headers["Content-Type"] = "multipart/form-data; boundary=b"
    reply = await gateway.post("/v1/images", headers=headers, content=body())
    assert reply.status_code == 413
    assert len(sent) < 200
    _, recorded = fake_backends
    assert not recorded.images


async def test_a_file_of_several_chunks_streams_to_the_catalog(gateway_factory, fake_backends):
    gateway = await gateway_factory(max_upload_bytes=8 * MIB)
    _, recorded = fake_backends
    recorded.max_bytes = 8 * MIB
    data = PNG + bytes(3 * MIB)
    reply = await upload(gateway, await sign_in(gateway), ("big.png", data))
    assert (reply.status_code, reply.json()["size"]) == (201, len(data))
    assert recorded.upload_chunks == [MIB, MIB, MIB, len(data) - 3 * MIB]


async def test_a_file_of_several_chunks_over_the_limit_is_413_mid_stream(gateway_factory, fake_backends):
    gateway = await gateway_factory(max_upload_bytes=2 * MIB + 1)
    _, recorded = fake_backends
    recorded.max_bytes = 8 * MIB
    reply = await upload(gateway, await sign_in(gateway), ("big.png", PNG + bytes(3 * MIB)))
    assert reply.status_code == 413
    assert "big.png is larger than the limit" in reply.json()["error"]["message"]
    assert not recorded.images


async def test_list_search_categories_tags(gateway):
    headers = await sign_in(gateway)
    for index in range(3):
        await upload(gateway, headers, (f"{index}.png", PNG + bytes([index])))
    first = (await gateway.get("/v1/images?page_size=2", headers=headers)).json()
    assert [image["filename"] for image in first["images"]] == ["2.png", "1.png"]
    rest = (await gateway.get(f"/v1/images?page_token={first['next_page_token']}", headers=headers)).json()
    assert [image["filename"] for image in rest["images"]] == ["0.png"]
    assert rest["next_page_token"] == ""
    found = (await gateway.get("/v1/search?q=tab", headers=headers)).json()
    assert len(found["images"]) == 3
    categories = (await gateway.get("/v1/categories", headers=headers)).json()
    assert categories == {"categories": [{"category": "tabby", "count": 3}]}
    assert (await gateway.get("/v1/tags", headers=headers)).json() == {"tags": [{"tag": "cat", "count": 3}]}


async def test_tag_suggestions_pass_the_prefix_and_limit(gateway_factory, fake_backends):
    gateway = await gateway_factory()
    _, recorded = fake_backends
    headers = await sign_in(gateway)
    await upload(gateway, headers, ("0.png", PNG))
    reply = await gateway.get("/v1/tags?prefix=ca&limit=5", headers=headers)
    assert reply.json() == {"tags": [{"tag": "cat", "count": 1}]}
    assert (await gateway.get("/v1/tags?prefix=do", headers=headers)).json() == {"tags": []}
    sent = recorded.tag_requests[0]
    assert (sent.prefix, sent.limit, sent.HasField("min_score")) == ("ca", 5, False)
    assert (await gateway.get("/v1/tags?limit=5000", headers=headers)).status_code == 400


async def test_settings_read_and_change(gateway):
    headers = await sign_in(gateway)
    assert (await gateway.get("/v1/me/settings", headers=headers)).json() == {"min_score": 0.12}
    changed = await gateway.put("/v1/me/settings", headers=headers, json={"min_score": 0.3})
    assert changed.status_code == 200 and changed.json() == {"min_score": 0.3}
    assert (await gateway.get("/v1/me/settings", headers=headers)).json() == {"min_score": 0.3}
    assert (await gateway.put("/v1/me/settings", headers=headers, json={"min_score": 2})).status_code == 400
    assert (await gateway.get("/v1/me/settings")).status_code == 401


async def test_empty_search_is_400(gateway):
    reply = await gateway.get("/v1/search?q=", headers=await sign_in(gateway))
    assert reply.status_code == 400


async def test_download_is_byte_identical_with_headers_and_304(gateway):
    headers = await sign_in(gateway)
    data = PNG * 3
    uid = (await upload(gateway, headers, ("../evil\u202e.png", data))).json()["uid"]
    reply = await gateway.get(f"/v1/images/{uid}/content?download=true", headers=headers)
    assert reply.status_code == 200
    assert reply.content == data
    assert len(data) > FAKE_CHUNK_BYTES
    assert reply.headers["content-length"] == str(len(data))
    assert reply.headers["content-type"] == "image/png"
    assert reply.headers["content-disposition"].startswith('attachment; filename="evil.png"')
    assert reply.headers["x-content-type-options"] == "nosniff"
    etag = reply.headers["etag"]
    cached = await gateway.get(f"/v1/images/{uid}/content", headers=headers | {"If-None-Match": etag})
    assert (cached.status_code, cached.content) == (304, b"")


async def test_download_broken_before_its_bytes_is_503_not_a_cut_body(gateway, fake_backends):
    _, recorded = fake_backends
    headers = await sign_in(gateway)
    uid = (await upload(gateway, headers, ("a.png", PNG))).json()["uid"]
    recorded.broken_downloads.add(uid)
    reply = await gateway.get(f"/v1/images/{uid}/content", headers=headers)
    assert reply.status_code == 503
    assert reply.headers["retry-after"]
    assert reply.json()["error"]["message"]


async def test_thumbnail(gateway):
    headers = await sign_in(gateway)
    uid = (await upload(gateway, headers, ("a.png", PNG))).json()["uid"]
    reply = await gateway.get(f"/v1/images/{uid}/thumbnail", headers=headers)
    assert (reply.status_code, reply.content, reply.headers["content-type"]) == (200, b"thumb", "image/jpeg")
    display = await gateway.get(f"/v1/images/{uid}/thumbnail?size=display", headers=headers)
    assert (display.status_code, display.content) == (200, b"display")
    assert display.headers["etag"] not in (reply.headers["etag"], "")
    wrong = await gateway.get(f"/v1/images/{uid}/thumbnail?size=huge", headers=headers)
    assert wrong.status_code == 400 and "size" in wrong.text


async def test_other_users_images_are_404(gateway):
    uid = (await upload(gateway, await sign_in(gateway, "ada"), ("a.png", PNG))).json()["uid"]
    other = await sign_in(gateway, "bob")
    for path in (f"/v1/images/{uid}", f"/v1/images/{uid}/content"):
        reply = await gateway.get(path, headers=other)
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"


async def test_tags_and_delete(gateway):
    headers = await sign_in(gateway)
    uid = (await upload(gateway, headers, ("a.png", PNG))).json()["uid"]
    tagged = await gateway.put(f"/v1/images/{uid}/tags", headers=headers, json={"tags": ["holiday"]})
    assert tagged.json()["manual_tags"] == ["holiday"]
    assert (await gateway.delete(f"/v1/images/{uid}", headers=headers)).status_code == 204
    assert (await gateway.get(f"/v1/images/{uid}", headers=headers)).status_code == 404


async def test_model_is_open_and_limits_are_not(gateway, test_keys):
    model = await gateway.get("/v1/model")
    assert model.json() == {"name": "efficientnet_lite0", "version": "1", "description": "fake model"}
    assert (await gateway.get("/v1/limits")).status_code == 401
    limits = await gateway.get("/v1/limits", headers={"Authorization": f"Bearer {test_keys.token()}"})
    assert limits.json() == {
        "max_bytes": FAKE_MAX_BYTES,
        "max_pixels": 1000,
        "content_types": ["image/jpeg"],
        "max_files": 20,
    }


async def test_jwks_passes_through(gateway, test_keys):
    assert (await gateway.get("/.well-known/jwks.json")).json() == test_keys.jwks()


async def test_request_id_is_kept_or_made_and_forwarded(gateway, fake_backends):
    headers = await sign_in(gateway)
    reply = await gateway.get("/v1/images", headers=headers | {"X-Request-ID": "trace-123"})
    assert reply.headers["x-request-id"] == "trace-123"
    _, recorded = fake_backends
    assert recorded.metadata[-1]["x-request-id"] == "trace-123"
    generated = await gateway.get("/v1/images", headers=headers | {"X-Request-ID": "bad id\u00e9".encode()})
    assert len(generated.headers["x-request-id"]) == 32


async def test_unknown_route_uses_the_error_shape(gateway):
    reply = await gateway.get("/v1/nope")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"


async def test_backend_down_is_503_and_the_pod_stays_ready(gateway_factory):
    gateway = await gateway_factory(catalog_addr="127.0.0.1:1", backend_timeout_seconds=1.0)
    reply = await gateway.get("/v1/images", headers={"Authorization": "Bearer abc"})
    assert reply.status_code == 503
    assert "Retry-After" in reply.headers
    ready = await gateway.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["backends"]["catalog"] == "UNREACHABLE"
    assert ready.json()["backends"]["auth"] == "SERVING"


async def test_health_metrics_page_and_docs(gateway):
    assert (await gateway.get("/healthz")).json() == {"status": "ok", "backends": {}}
    assert (await gateway.get("/readyz")).status_code == 200
    metrics = (await gateway.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/readyz",status="200"} 1.0' in metrics
    page = await gateway.get("/")
    assert "Content-Security-Policy" in page.headers
    assert "<html" in page.text
    docs = await gateway.get("/docs")
    assert "/docs/assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert (await gateway.get("/docs/assets/swagger-ui-bundle.js")).status_code == 200


async def test_cors_only_for_configured_origins(gateway_factory):
    gateway = await gateway_factory(cors_origins=["https://photos.example"])
    preflight = {
        "Origin": "https://photos.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = await gateway.options("/v1/images", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://photos.example"
    refused = await gateway.options("/v1/images", headers=preflight | {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers


async def test_openapi_documents_errors_not_422(gateway):
    schema = (await gateway.get("/openapi.json")).json()
    responses = schema["paths"]["/v1/images"]["get"]["responses"]
    assert "422" not in responses
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
