"""Similar photos and near-duplicates through the gateway, with the real model's embeddings."""

import io

from PIL import Image

from tests.e2e.conftest import sign_up
from tests.e2e.photos import photo


def reencoded(name: str, *, scale: float = 1.0, crop: float = 0.0) -> bytes:
    """The same shot as people store it again: resized, cropped a little, saved as another JPEG."""
    image = Image.open(io.BytesIO(photo(name))).convert("RGB")
    w, h = image.size
    image = image.crop((int(w * crop), int(h * crop), int(w * (1 - crop)), int(h * (1 - crop))))
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return out.getvalue()


def upload(api, headers, name: str, data: bytes) -> dict:
    reply = api.post("/v1/images", headers=headers, files={"image": (name, data, "image/jpeg")})
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_a_reencoded_shot_is_a_near_duplicate_and_the_most_similar(api):
    alice, bob = sign_up(api), sign_up(api)
    cat = upload(api, alice, "cat.png", photo("chelsea.png"))
    for name in ("coffee.png", "rocket.jpg", "astronaut.png"):
        upload(api, alice, name, photo(name))
    # Bob holds the very same cat: it must never show in alice's answers.
    upload(api, bob, "cat.png", photo("chelsea.png"))
    again = upload(api, alice, "cat-small.jpg", reencoded("chelsea.png", scale=0.6, crop=0.05))
    assert again["near_duplicate_of"] == cat["uid"] and not again["duplicate"]

    similar = api.get(f"/v1/images/{cat['uid']}/similar", headers=alice, params={"page_size": 10})
    assert similar.status_code == 200, similar.text
    found = similar.json()["images"]
    assert found[0]["uid"] == again["uid"]
    assert len(found) == 4 and cat["uid"] not in {image["uid"] for image in found}, "own images only, itself excluded"
    assert found[0]["similarity"] > 0.8 > found[1]["similarity"]

    groups = api.get("/v1/duplicates", headers=alice).json()["groups"]
    assert [[image["uid"] for image in group["images"]] for group in groups] == [[again["uid"], cat["uid"]]]
    assert api.get("/v1/duplicates", headers=bob).json()["groups"] == []


def test_similar_refuses_other_users_images_and_bad_sizes(api):
    alice, bob = sign_up(api), sign_up(api)
    mine = upload(api, alice, "coffee.png", photo("coffee.png"))
    assert api.get(f"/v1/images/{mine['uid']}/similar", headers=bob).status_code == 404
    assert api.get(f"/v1/images/{mine['uid']}/similar", headers=alice, params={"page_size": 101}).status_code == 400
    assert api.get(f"/v1/images/{mine['uid']}/similar", headers=alice).json()["images"] == []
