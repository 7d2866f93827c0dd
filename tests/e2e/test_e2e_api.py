"""The REST API end to end: every real service, real PostgreSQL, the real model, through the gateway over HTTP."""

import hashlib
import io
import socket
import time
from urllib.parse import urlsplit

from PIL import Image

from services.common.imaging import register_openers
from tests.e2e.conftest import PASSWORD, sign_up
from tests.e2e.photos import photo

CAT_LABELS = {"tabby", "tiger cat", "Egyptian cat"}


def upload(api, headers, *names: str):
    files = [("image", (name, photo(name), "application/octet-stream")) for name in names]
    return api.post("/v1/images", headers=headers, files=files)


def announce_upload(base_url: str, headers: dict, *, content_length: int) -> str:
    """Sends only the headers of a huge upload and returns the status line the server answers without the body."""
    url = urlsplit(base_url)
    lines = [
        "POST /v1/images HTTP/1.1",
        f"Host: {url.netloc}",
        f"Authorization: {headers['Authorization']}",
        "Content-Type: multipart/form-data; boundary=x",
        f"Content-Length: {content_length}",
    ]
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def test_accounts_tokens_and_keys(api):
    username = f"ada_{time.time_ns()}"
    assert api.post("/v1/auth/register", json={"username": username, "password": PASSWORD}).status_code == 201
    again = api.post("/v1/auth/register", json={"username": username.upper(), "password": PASSWORD})
    assert again.status_code == 409
    wrong = api.post("/v1/auth/login", json={"username": username, "password": "not the password"})
    assert wrong.status_code == 401
    pair = api.post("/v1/auth/login", json={"username": username, "password": PASSWORD}).json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] > 0
    me = api.get("/v1/me", headers={"Authorization": f"Bearer {pair['access_token']}"}).json()
    assert me["username"] == username and me["roles"] == ["user"]
    renewed = api.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert renewed.status_code == 200
    new = renewed.json()
    headers = {"Authorization": f"Bearer {new['access_token']}"}
    assert api.post("/v1/auth/logout", headers=headers, json={"refresh_token": new["refresh_token"]}).status_code == 204
    assert api.post("/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 401
    keys = api.get("/.well-known/jwks.json").json()["keys"]
    assert keys and all(key["alg"] == "EdDSA" for key in keys)


def test_upload_classifies_a_real_photo(api, user):
    reply = upload(api, user, "chelsea.png")
    assert reply.status_code == 201, reply.text
    image = reply.json()
    assert image["status"] == "classified"
    assert image["category"] in CAT_LABELS
    assert {label["label"] for label in image["labels"][:3]} & CAT_LABELS
    assert image["labels"][0]["score"] > 0.2
    assert "cat" in image["tags"]
    assert (image["width"], image["height"], image["content_type"]) == (451, 300, "image/png")
    assert image["size"] == len(photo("chelsea.png"))
    assert image["sha256"] == hashlib.sha256(photo("chelsea.png")).hexdigest()
    assert image["created_at"].endswith("Z")


def test_several_files_in_one_request(api, user):
    reply = api.post(
        "/v1/images",
        headers=user,
        files=[
            ("image", ("coffee.png", photo("coffee.png"), "image/png")),
            ("image", ("notes.txt", b"not an image at all", "text/plain")),
            ("image", ("rocket.jpg", photo("rocket.jpg"), "image/jpeg")),
        ],
    )
    assert reply.status_code == 201, reply.text
    batch = reply.json()
    assert [image["filename"] for image in batch["images"]] == ["coffee.png", "rocket.jpg"]
    assert batch["images"][0]["category"] == "espresso"
    assert [failure["filename"] for failure in batch["errors"]] == ["notes.txt"]
    assert batch["errors"][0]["error"]["code"] == "invalid_argument"


def test_list_pages_search_categories_and_tags(api, user):
    for name in ("chelsea.png", "coffee.png", "motorcycle_left.png"):
        assert upload(api, user, name).status_code == 201
    first = api.get("/v1/images?page_size=2", headers=user).json()
    assert [image["filename"] for image in first["images"]] == ["motorcycle_left.png", "coffee.png"]
    assert first["next_page_token"]
    rest = api.get("/v1/images", params={"page_size": 2, "page_token": first["next_page_token"]}, headers=user).json()
    assert [image["filename"] for image in rest["images"]] == ["chelsea.png"]
    assert rest["next_page_token"] == ""
    found = api.get("/v1/search?q=cat", headers=user).json()["images"]
    assert [image["filename"] for image in found] == ["chelsea.png"]
    assert api.get("/v1/images?tag=drink", headers=user).json()["images"][0]["filename"] == "coffee.png"
    categories = api.get("/v1/categories", headers=user).json()["categories"]
    assert sum(entry["count"] for entry in categories) == 3
    assert {"category": "espresso", "count": 1} in categories
    espresso = api.get("/v1/images?category=espresso", headers=user).json()["images"]
    assert [image["filename"] for image in espresso] == ["coffee.png"]
    tags = {entry["tag"]: entry["count"] for entry in api.get("/v1/tags", headers=user).json()["tags"]}
    assert tags["cat"] == 1
    suggestions = api.get("/v1/tags?prefix=Mot&limit=3", headers=user).json()["tags"]
    assert {"tag": "motorcycle", "count": 1} in suggestions
    for query, filename in (("kittens", "chelsea.png"), ("Coffee", "coffee.png"), ("motorbike", "motorcycle_left.png")):
        found = api.get("/v1/search", params={"q": query}, headers=user).json()["images"]
        assert [image["filename"] for image in found] == [filename], query
    assert api.get("/v1/search?q=bicycle", headers=user).json()["images"] == []


def test_download_thumbnail_and_delete(api, user):
    original = photo("rocket.jpg")
    image = upload(api, user, "rocket.jpg").json()
    content = api.get(f"/v1/images/{image['uid']}/content?download=true", headers=user)
    assert content.status_code == 200
    assert content.content == original
    assert content.headers["content-type"] == "image/jpeg"
    assert content.headers["content-length"] == str(len(original))
    assert content.headers["content-disposition"].startswith('attachment; filename="rocket.jpg"')
    assert content.headers["etag"] == f'"{hashlib.sha256(original).hexdigest()}"'
    cached = api.get(f"/v1/images/{image['uid']}/content", headers=user | {"If-None-Match": content.headers["etag"]})
    assert cached.status_code == 304
    thumbnail = api.get(f"/v1/images/{image['uid']}/thumbnail", headers=user)
    assert thumbnail.status_code == 200
    with Image.open(io.BytesIO(thumbnail.content)) as small:
        assert max(small.size) <= 256
    assert api.delete(f"/v1/images/{image['uid']}", headers=user).status_code == 204
    assert api.get(f"/v1/images/{image['uid']}", headers=user).status_code == 404
    assert api.get(f"/v1/images/{image['uid']}/content", headers=user).status_code == 404


def sideways_heic(name: str) -> bytes:
    """The photo as a phone stores it: HEIC, pixels as the sensor saw them (turned), the turn in EXIF."""
    register_openers()
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    turned = Image.open(io.BytesIO(photo(name))).convert("RGB").transpose(Image.Transpose.ROTATE_90)
    turned.save(buffer, "HEIF", quality=90, exif=exif)
    return buffer.getvalue()


def test_sideways_jpeg_and_heic_phone_photos(api, user):
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo("chelsea.png"))).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(
        buffer, "JPEG", quality=92, exif=exif
    )
    files = [
        ("image", ("IMG_0001.JPG", buffer.getvalue(), "image/jpeg")),
        ("image", ("IMG_0002.HEIC", sideways_heic("coffee.png"), "image/heic")),
    ]
    reply = api.post("/v1/images", headers=user, files=files)
    assert reply.status_code == 201, reply.text
    jpeg, heic = reply.json()["images"]
    assert (jpeg["width"], jpeg["height"], jpeg["orientation"]) == (451, 300, 6)
    assert jpeg["status"] == "classified" and jpeg["category"] in CAT_LABELS
    assert heic["status"] == "classified" and heic["content_type"] == "image/heic"
    content = api.get(f"/v1/images/{heic['uid']}/content", headers=user)
    assert content.headers["content-type"] == "image/heic" and content.content == files[1][1][1]
    thumbnail = api.get(f"/v1/images/{jpeg['uid']}/thumbnail", headers=user)
    with Image.open(io.BytesIO(thumbnail.content)) as small:
        assert small.size == (256, 170)


def test_manual_tags(api, user):
    image = upload(api, user, "coffee.png").json()
    tagged = api.put(f"/v1/images/{image['uid']}/tags", headers=user, json={"tags": ["breakfast"]})
    assert tagged.status_code == 200, tagged.text
    assert tagged.json()["manual_tags"] == ["breakfast"]
    assert tagged.json()["tags"][0] == "breakfast"
    assert [i["uid"] for i in api.get("/v1/search?q=Breakfasts", headers=user).json()["images"]] == [image["uid"]]


def test_users_never_see_each_other(api, user):
    image = upload(api, user, "chelsea.png").json()
    other = sign_up(api)
    assert api.get(f"/v1/images/{image['uid']}", headers=other).status_code == 404
    assert api.delete(f"/v1/images/{image['uid']}", headers=other).status_code == 404
    assert api.get("/v1/images", headers=other).json()["images"] == []


def test_refusals(api, user):
    assert api.get("/v1/images").status_code == 401
    assert api.get("/v1/images", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    not_image = api.post("/v1/images", headers=user, files={"image": ("a.png", b"plain text", "image/png")})
    assert not_image.status_code == 400
    assert not_image.json()["error"]["code"] == "invalid_argument"
    assert api.post("/v1/images", headers=user, json={}).status_code == 415
    assert announce_upload(str(api.base_url), user, content_length=10**9).startswith("HTTP/1.1 413")
    assert api.get("/v1/search?q=", headers=user).status_code == 400
    assert api.get("/v1/images?page_size=0", headers=user).status_code == 400


def test_model_needs_no_token(api):
    for path in ("/v1/model", "/model"):
        model = api.get(path)
        assert model.status_code == 200, model.text
        assert model.json()["name"] == "efficientnet_lite0"


def test_model_limits_health_metrics_and_request_ids(api, user):
    model = api.get("/v1/model", headers=user)
    assert model.status_code == 200, model.text
    assert model.json()["name"] == "efficientnet_lite0"
    limits = api.get("/v1/limits", headers=user).json()
    assert "image/jpeg" in limits["content_types"] and limits["max_bytes"] > 1_000_000
    assert api.get("/healthz").json()["status"] == "ok"
    ready = api.get("/readyz").json()
    assert ready["backends"] == {"auth": "SERVING", "catalog": "SERVING", "inference": "SERVING"}
    traced = api.get("/v1/images", headers=user | {"X-Request-ID": "e2e-trace-1"})
    assert traced.headers["x-request-id"] == "e2e-trace-1"
    assert "http_requests_total" in api.get("/metrics").text


def test_original_api_shapes(api, user):
    model = api.get("/model").json()
    assert set(model) == {"name", "version", "description"}
    # make run serves the model with the bundled model server, and /model says so.
    assert "served by the Tagsmith model server (services.modelserver on TensorFlow" in model["description"]
    created = api.post("/img", headers=user, files={"image": ("cat.png", photo("chelsea.png"), "image/png")})
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == {"category", "uid"} and body["category"] in CAT_LABELS
    assert api.get("/images", headers=user).json() == [{"uid": body["uid"], "category": body["category"]}]
    assert api.get("/categories", headers=user).json() == {body["category"]: "1"}
    for method in ("GET", "POST"):
        reply = api.request(method, f"/img/{body['uid']}", headers=user)
        assert (reply.status_code, reply.content) == (200, photo("chelsea.png"))
    malformed = api.get("/img/not-an-id", headers=user)
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["error"]["message"] == (
        "this is not an image id: ids are the 22 characters returned when the image was uploaded"
    ), malformed.text


def test_original_api_anonymous_mode(api):
    created = api.post("/img", files={"image": ("coffee.png", photo("coffee.png"), "image/png")})
    assert created.status_code == 200, created.text
    uid = created.json()["uid"]
    assert {"uid": uid, "category": "espresso"} in api.get("/images").json()
    assert int(api.get("/categories").json()["espresso"]) >= 1
    assert api.get(f"/img/{uid}").content == photo("coffee.png")
    assert api.get("/v1/images").status_code == 401
