"""Trash: deleting hides an image (counts, tags and search follow), restoring brings it back, the sweeper purges."""

import grpc
import psycopg
import pytest
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.content import ContentBytes
from services.catalog.store import CatalogStore
from services.catalog.sweeper import Sweeper
from services.common.db import open_pool
from tests.support.images import image_bytes

DAY = 86400


@pytest.fixture
async def world(catalog_server, scripted_inference):
    classifier, address = await scripted_inference()
    return await catalog_server(inference_addr=address), classifier


@pytest.fixture
async def store(catalog_dsn):
    pool = await open_pool(catalog_dsn, max_size=3)
    yield CatalogStore(pool)
    await pool.close()


def _img(n: int) -> bytes:
    return image_bytes((n, 90, 40), size=(32, 24), fmt="PNG")


async def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code()


async def _counts(alice) -> tuple[dict, dict]:
    categories = await alice.ListCategories(catalog_pb2.ListCategoriesRequest())
    tags = await alice.ListTags(catalog_pb2.ListTagsRequest())
    return {c.category: c.count for c in categories.categories}, {t.tag: t.count for t in tags.tags}


async def test_trashed_image_is_hidden_everywhere_and_restored_whole(world, test_keys):
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    cat, dog = _img(1), _img(2)
    classifier.script(cat, [("tabby", 0.8)], ["tabby", "cat"])
    classifier.script(dog, [("beagle", 0.7)], ["beagle", "dog"])
    cat_image, dog_image = await alice.upload(cat), await alice.upload(dog)
    await alice.UpdateTags(catalog_pb2.UpdateTagsRequest(uid=cat_image.uid, add=["garden"]))

    trashed = await alice.TrashImage(catalog_pb2.TrashImageRequest(uid=cat_image.uid))
    assert trashed.HasField("deleted_at") and trashed.HasField("purge_at")
    assert 29.9 * DAY < trashed.purge_at.seconds - trashed.deleted_at.seconds <= 30 * DAY
    assert await _code(alice.GetImage(catalog_pb2.GetImageRequest(uid=cat_image.uid))) == grpc.StatusCode.NOT_FOUND
    listed = await alice.ListImages(catalog_pb2.ListImagesRequest())
    assert [i.uid for i in listed.images] == [dog_image.uid]
    assert not (await alice.SearchImages(catalog_pb2.SearchImagesRequest(query="garden"))).images
    categories, tags = await _counts(alice)
    assert categories == {"beagle": 1} and tags["beagle"] == tags["dog"] == 1
    assert not {"tabby", "cat", "garden"} & set(tags), "the trashed image's tags are not counted"
    again = alice.TrashImage(catalog_pb2.TrashImageRequest(uid=cat_image.uid))
    assert await _code(again) == grpc.StatusCode.NOT_FOUND

    trash = await alice.ListTrash(catalog_pb2.ListTrashRequest())
    assert [i.uid for i in trash.images] == [cat_image.uid] and trash.retention_days == 30
    meta, thumbnail = await alice.download(cat_image.uid, thumbnail=True)  # the trash shows what it holds
    assert meta.uid == cat_image.uid and thumbnail
    assert await _code(alice.download(cat_image.uid)) == grpc.StatusCode.NOT_FOUND

    restored = await alice.RestoreImage(catalog_pb2.RestoreImageRequest(uid=cat_image.uid))
    assert not restored.HasField("deleted_at") and restored.tags[0] == "garden"
    assert {"tabby", "cat"} <= set(restored.tags)
    assert [i.uid for i in (await alice.SearchImages(catalog_pb2.SearchImagesRequest(query="garden"))).images] == [
        cat_image.uid
    ]
    categories, tags = await _counts(alice)
    assert categories == {"beagle": 1, "tabby": 1}
    assert {tag: tags[tag] for tag in ("beagle", "dog", "garden", "tabby", "cat")} == dict.fromkeys(
        ("beagle", "dog", "garden", "tabby", "cat"), 1
    )
    assert not (await alice.ListTrash(catalog_pb2.ListTrashRequest())).images
    restore_again = alice.RestoreImage(catalog_pb2.RestoreImageRequest(uid=cat_image.uid))
    assert await _code(restore_again) == grpc.StatusCode.NOT_FOUND


async def test_trash_is_the_owners_alone_and_pages_without_repeats(world, test_keys):
    catalog, _ = world
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    uids = [(await alice.upload(_img(10 + n))).uid for n in range(5)]
    assert await _code(bob.TrashImage(catalog_pb2.TrashImageRequest(uid=uids[0]))) == grpc.StatusCode.NOT_FOUND
    for uid in uids:
        await alice.TrashImage(catalog_pb2.TrashImageRequest(uid=uid))
    assert not (await bob.ListTrash(catalog_pb2.ListTrashRequest())).images
    assert await _code(bob.RestoreImage(catalog_pb2.RestoreImageRequest(uid=uids[0]))) == grpc.StatusCode.NOT_FOUND
    seen, token = [], ""
    while True:
        reply = await alice.ListTrash(catalog_pb2.ListTrashRequest(page_size=2, page_token=token))
        seen += [i.uid for i in reply.images]
        token = reply.next_page_token
        if not token:
            break
    assert seen == list(reversed(uids))
    bad = alice.ListTrash(catalog_pb2.ListTrashRequest(page_token="bm90IG91cnM"))
    assert await _code(bad) == grpc.StatusCode.INVALID_ARGUMENT


async def test_uploading_a_trashed_photo_again_restores_it(world, test_keys):
    catalog, _ = world
    alice = catalog.client(test_keys.token("alice"))
    first = await alice.upload(_img(30))
    await alice.TrashImage(catalog_pb2.TrashImageRequest(uid=first.uid))
    again = await alice.upload(_img(30))
    assert again.uid == first.uid and again.duplicate and not again.HasField("deleted_at")
    assert [i.uid for i in (await alice.ListImages(catalog_pb2.ListImagesRequest())).images] == [first.uid]


async def test_sweeper_purges_trash_after_retention_only(world, catalog_dsn, store, test_keys):
    catalog, _ = world
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    old, recent, shared = await alice.upload(_img(40)), await alice.upload(_img(41)), await alice.upload(_img(42))
    bobs_copy = await bob.upload(_img(42))
    for image in (old, recent, shared):
        await alice.TrashImage(catalog_pb2.TrashImageRequest(uid=image.uid))
    with psycopg.connect(catalog_dsn) as conn:
        conn.execute(
            "UPDATE catalog.images SET deleted_at = now() - interval '31 days' WHERE uid = ANY(%s)",
            ([old.uid, shared.uid],),
        )
    sweeper = Sweeper(
        store=store, contents=ContentBytes(catalog.blobs), grace_seconds=3600, trash_retention_seconds=30 * DAY
    )
    report = await sweeper.sweep_once()
    assert report.trash == 2
    assert [i.uid for i in (await alice.ListTrash(catalog_pb2.ListTrashRequest())).images] == [recent.uid]
    keys = {b.key async for b in catalog.blobs.list("objects/")}
    assert f"objects/{old.sha256}" not in keys
    assert {f"objects/{recent.sha256}", f"objects/{shared.sha256}"} <= keys  # bob's identical photo keeps its bytes
    _, body = await bob.download(bobs_copy.uid)
    assert body == _img(42)
    assert await _code(alice.RestoreImage(catalog_pb2.RestoreImageRequest(uid=old.uid))) == grpc.StatusCode.NOT_FOUND
