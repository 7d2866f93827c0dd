"""Limits and refusals end to end, with the real model: cut files, appended bytes, file counts, the storage quota."""

import httpx

from tests.e2e.photos import photo


def _post(api: httpx.Client, headers: dict, *files: tuple[str, bytes]) -> httpx.Response:
    return api.post(
        "/v1/images", headers=headers, files=[("image", (n, d, "application/octet-stream")) for n, d in files]
    )


def _listed(api: httpx.Client, headers: dict) -> list[str]:
    return [image["filename"] for image in api.get("/v1/images", headers=headers).json()["images"]]


def test_photos_cut_in_half_are_refused_and_not_kept(api, user):
    for name in ("rocket.jpg", "chelsea.png"):
        whole = photo(name)
        reply = _post(api, user, (name, whole[: len(whole) // 2]))
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["message"] == "the image is truncated or corrupt; upload the complete file"
    assert _listed(api, user) == []
    assert api.get("/v1/me", headers=user).json()["storage"]["images_used"] == 0


def test_bytes_appended_after_a_photo_are_classified_normally(api, user):
    trailer = b"\x00\x00MotionPhoto_Data" + bytes(range(256)) * 64
    for name, label in (("chelsea.png", {"tabby", "tiger cat", "Egyptian cat"}), ("rocket.jpg", None)):
        reply = _post(api, user, (name, photo(name) + trailer))
        assert reply.status_code == 201, reply.text
        image = reply.json()
        assert image["status"] == "classified", image
        if label:
            assert image["category"] in label


def test_twenty_one_files_store_none(api, user):
    files = [(f"{index}.png", photo("chelsea.png") + bytes([index])) for index in range(21)]
    reply = _post(api, user, *files)
    assert reply.status_code == 400
    assert "nothing was stored" in reply.json()["error"]["message"]
    assert _listed(api, user) == []


def test_me_shows_the_storage_used_and_the_quota(api, user):
    data = photo("coffee.png")
    assert _post(api, user, ("coffee.png", data)).status_code == 201
    assert _post(api, user, ("again.png", data)).json()["duplicate"] is True
    storage = api.get("/v1/me", headers=user).json()["storage"]
    assert (storage["images_used"], storage["bytes_used"]) == (1, len(data))
    assert storage["bytes_limit"] > 0 and storage["images_limit"] > 0
