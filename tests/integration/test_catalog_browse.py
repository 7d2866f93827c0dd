"""Listing, search, counts, manual tags and ownership through a real catalog server and PostgreSQL."""

import asyncio
import io
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.store import CatalogStore
from tests.support.images import image_bytes


@pytest.fixture
async def world(catalog_server, scripted_inference):
    """A catalog whose classifier answers with scripted labels."""
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address)
    return catalog, classifier


def _img(n: int) -> bytes:
    return image_bytes((n % 256, n // 256, 77), size=(32, 24), fmt="PNG")


async def _all_pages(list_call, request, field="images") -> list[str]:
    seen, token = [], ""
    while True:
        request.page_token = token
        reply = await list_call(request)
        seen += [image.uid for image in getattr(reply, field)]
        token = reply.next_page_token
        if not token:
            return seen


async def test_pagination_is_exhaustive_and_duplicate_free_under_concurrent_uploads(world, test_keys):
    catalog, _ = world
    alice = catalog.client(test_keys.token("alice"))
    existing = [(await alice.upload(_img(n))).uid for n in range(13)]
    seen, token, extra = [], "", 100
    while True:
        reply = await alice.ListImages(catalog_pb2.ListImagesRequest(page_size=3, page_token=token))
        seen += [image.uid for image in reply.images]
        # New uploads land between page fetches; they are newer than every cursor, so never shift a page.
        await asyncio.gather(alice.upload(_img(extra)), alice.upload(_img(extra + 1)))
        extra += 2
        token = reply.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 13
    assert seen == list(reversed(existing))


async def test_filters_by_category_tag_and_score(world, test_keys):
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    dog, cat, fox = _img(1), _img(2), _img(3)
    classifier.script(dog, [("golden retriever", 0.9), ("Labrador retriever", 0.05)])
    classifier.script(cat, [("tabby", 0.6)])
    classifier.script(fox, [("red fox", 0.3), ("kit fox", 0.2)])
    dog_uid, cat_uid, fox_uid = [(await alice.upload(data)).uid for data in (dog, cat, fox)]

    async def uids(**kwargs) -> list[str]:
        reply = await alice.ListImages(catalog_pb2.ListImagesRequest(**kwargs))
        return [image.uid for image in reply.images]

    assert await uids(category="tabby") == [cat_uid]
    assert await uids(tag="CANINE") == [fox_uid, dog_uid]
    assert await uids(tag="dog") == [dog_uid]
    # A hypernym scores the sum of its classes: red fox 0.3 + kit fox 0.2.
    assert await uids(tag="fox", min_score=0.45) == [fox_uid]
    assert await uids(tag="fox", min_score=0.6) == []
    # Unset min_score with a tag means the caller's setting (0.12 by default): the 5 % Labrador is left out.
    assert await uids(tag="labrador retriever") == []
    assert await uids(tag="labrador retriever", min_score=0) == [dog_uid]
    assert await uids(min_score=0.5) == [cat_uid, dog_uid]
    assert await uids(tag="nothing") == []
    image = await alice.GetImage(catalog_pb2.GetImageRequest(uid=dog_uid))
    assert image.status == catalog_pb2.IMAGE_STATUS_CLASSIFIED and image.category == "golden retriever"
    assert [(label.label, label.rank) for label in image.labels] == [("golden retriever", 1), ("Labrador retriever", 2)]
    assert image.labels[0].model_name == "scripted" and image.model_version == "1"
    assert image.labels[0].source == catalog_pb2.LABEL_SOURCE_MODEL
    # Best first: "retriever" carries both retrievers (0.95), "golden retriever" one (0.9).
    assert image.tags[0] == "retriever" and "golden retriever" in image.tags and "dog" in image.tags
    assert "golden" not in image.tags and image.vocabulary_version
    # The 5 % Labrador finds nothing at the default threshold, so its own tag is not listed either; lowering the
    # owner's threshold lists it again.
    assert "labrador retriever" not in image.tags
    await alice.UpdateSettings(catalog_pb2.UpdateSettingsRequest(min_score=0.01))
    relisted = (await alice.ListImages(catalog_pb2.ListImagesRequest())).images
    assert "labrador retriever" in next(found for found in relisted if found.uid == dog_uid).tags


async def test_search_ranking_manual_first_plurals_phrases_and_paging(world, test_keys):
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    images = {}
    for n, (label, score) in enumerate([("golden retriever", 0.5), ("Labrador retriever", 0.9), ("tabby", 0.8)]):
        data = _img(10 + n)
        classifier.script(data, [(label, score)])
        images[label] = (await alice.upload(data)).uid
    tagged = _img(20)
    classifier.script(tagged, [("tabby", 0.99)])
    images["manual"] = (await alice.upload(tagged)).uid
    await alice.UpdateTags(catalog_pb2.UpdateTagsRequest(uid=images["manual"], add=["Retriever Toy"]))

    async def search(query, **kwargs) -> list[str]:
        reply = await alice.SearchImages(catalog_pb2.SearchImagesRequest(query=query, **kwargs))
        return [image.uid for image in reply.images]

    expected = [images["manual"], images["Labrador retriever"], images["golden retriever"]]
    assert await search("retriever") == expected
    assert await search("RETRIEVERS") == expected
    assert await search("golden retrievers") == [images["golden retriever"]]
    assert await search("retriever", min_score=0.6) == expected[:2]
    assert await search("cats") == [images["manual"], images["tabby"]]
    # Several words: images matching all of them, ranked by the weakest match.
    assert await search("retriever cat") == [images["manual"]]
    # A word of a label is not a tag: "golden" alone names no golden retriever, "retr" is no word.
    assert await search("golden") == []
    assert await search("retr") == []
    assert await search("xyz") == []
    paged = await _all_pages(alice.SearchImages, catalog_pb2.SearchImagesRequest(query="dog", page_size=1))
    assert paged == [images["Labrador retriever"], images["golden retriever"]]


async def test_counts_agree_with_search_and_follow_uploads_tags_and_deletes(world, test_keys):
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    for n in range(3):
        classifier.script(_img(30 + n), [("tabby", 0.8)])
    classifier.script(_img(40), [("beagle", 0.4)])
    uids = [(await alice.upload(_img(n))).uid for n in (30, 31, 32, 40)]

    async def counts(**kwargs) -> dict[str, int]:
        return {t.tag: t.count for t in (await alice.ListTags(catalog_pb2.ListTagsRequest(**kwargs))).tags}

    async def agree_with_search(found: dict[str, int]) -> None:
        for tag, count in found.items():
            reply = await alice.SearchImages(catalog_pb2.SearchImagesRequest(query=tag, page_size=100))
            assert len(reply.images) == count, tag

    categories = await alice.ListCategories(catalog_pb2.ListCategoriesRequest())
    assert [(c.category, c.count) for c in categories.categories] == [("tabby", 3), ("beagle", 1)]
    tags = await counts()
    assert (tags["cat"], tags["tabby"], tags["beagle"], tags["dog"], tags["animal"]) == (3, 3, 1, 1, 4)
    assert "tabby cat" in tags and "golden retriever" not in tags
    await agree_with_search(tags)
    confident = await counts(min_score=0.5)
    assert confident["cat"] == 3 and "dog" not in confident
    suggestions = await alice.ListTags(catalog_pb2.ListTagsRequest(prefix="Ca", limit=2))
    assert [(t.tag, t.count) for t in suggestions.tags] == [("carnivore", 4), ("cat", 3)]
    assert await counts(prefix="cats") == {"cat": 3}
    await alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=uids[0]))
    await alice.UpdateTags(catalog_pb2.UpdateTagsRequest(uid=uids[1], add=["Holidays"], remove=["cat"]))
    categories = await alice.ListCategories(catalog_pb2.ListCategoriesRequest())
    assert [(c.category, c.count) for c in categories.categories] == [("tabby", 2), ("beagle", 1)]
    tags = await counts()
    assert (tags["tabby"], tags["cat"], tags["holiday"], tags["animal"]) == (2, 1, 1, 3)
    await agree_with_search(tags)


async def test_the_min_score_setting_applies_to_search_and_counts(world, test_keys):
    catalog, classifier = world
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    classifier.script(_img(45), [("beagle", 0.4)])
    uid = (await alice.upload(_img(45))).uid
    assert (await alice.GetSettings(catalog_pb2.GetSettingsRequest())).min_score == pytest.approx(0.12)
    updated = await alice.UpdateSettings(catalog_pb2.UpdateSettingsRequest(min_score=0.5))
    assert updated.min_score == pytest.approx(0.5)
    assert (await alice.SearchImages(catalog_pb2.SearchImagesRequest(query="beagle"))).images == []
    assert (await alice.ListCategories(catalog_pb2.ListCategoriesRequest())).categories == []
    assert (await alice.ListTags(catalog_pb2.ListTagsRequest())).tags == []
    found = await alice.SearchImages(catalog_pb2.SearchImagesRequest(query="beagle", min_score=0.3))
    assert [image.uid for image in found.images] == [uid]
    # Unset fields keep their value; another user keeps the default.
    kept = await alice.UpdateSettings(catalog_pb2.UpdateSettingsRequest())
    assert kept.min_score == pytest.approx(0.5)
    assert (await bob.GetSettings(catalog_pb2.GetSettingsRequest())).min_score == pytest.approx(0.12)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.UpdateSettings(catalog_pb2.UpdateSettingsRequest(min_score=1.5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_page_reads_the_min_score_setting_once(world, test_keys, monkeypatch):
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    classifier.script(_img(46), [("beagle", 0.4), ("basset", 0.2)])
    classifier.script(_img(47), [("beagle", 0.6)])
    for n in (46, 47):
        await alice.upload(_img(n))
    await alice.UpdateSettings(catalog_pb2.UpdateSettingsRequest(min_score=0.3))
    reads: list[str] = []
    read_setting = CatalogStore.min_score_setting

    async def counted(store, owner):
        reads.append(owner)
        return await read_setting(store, owner)

    # The real store, counted: every read of the setting is one statement on PostgreSQL.
    monkeypatch.setattr(CatalogStore, "min_score_setting", counted)
    pages = {
        "search": lambda: alice.SearchImages(catalog_pb2.SearchImagesRequest(query="beagle")),
        "search at 0.1": lambda: alice.SearchImages(catalog_pb2.SearchImagesRequest(query="beagle", min_score=0.1)),
        "tag": lambda: alice.ListImages(catalog_pb2.ListImagesRequest(tag="beagle")),
        "category": lambda: alice.ListImages(catalog_pb2.ListImagesRequest(category="beagle")),
        "tag at 0.1": lambda: alice.ListImages(catalog_pb2.ListImagesRequest(tag="beagle", min_score=0.1)),
        "unfiltered": lambda: alice.ListImages(catalog_pb2.ListImagesRequest()),
    }
    for name, call in pages.items():
        reads.clear()
        reply = await call()
        assert len(reply.images) == 2, name
        assert reads == ["alice"], name
        # The request's min_score filters; the tags shown follow the owner's setting (0.3) all the same.
        assert all("basset" not in image.tags for image in reply.images), name
    await alice.UpdateSettings(catalog_pb2.UpdateSettingsRequest(min_score=0.1))
    assert any("basset" in image.tags for image in (await pages["unfiltered"]()).images)


async def test_manual_tags_add_hide_replace(world, test_keys):
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    classifier.script(_img(50), [("beagle", 0.7)])
    uid = (await alice.upload(_img(50))).uid
    image = await alice.UpdateTags(catalog_pb2.UpdateTagsRequest(uid=uid, add=["  My Dog ", "park"], remove=["dog"]))
    assert list(image.manual_tags) == ["my dog", "park"]
    assert image.tags[:3] == ["my dog", "park", "beagle"] and "dog" not in image.tags
    found = await alice.SearchImages(catalog_pb2.SearchImagesRequest(query="park"))
    assert [i.uid for i in found.images] == [uid]
    image = await alice.UpdateTags(catalog_pb2.UpdateTagsRequest(uid=uid, add=["dog"], replace=True))
    assert list(image.manual_tags) == ["dog"] and image.tags[:2] == ["dog", "beagle"]
    assert (await alice.SearchImages(catalog_pb2.SearchImagesRequest(query="park"))).images == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.UpdateTags(catalog_pb2.UpdateTagsRequest(uid=uid, add=["x" * 65]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_every_rpc_is_scoped_to_the_caller(world, test_keys):
    catalog, _ = world
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    uid = (await alice.upload(_img(60))).uid
    missing = "A" * 22
    for target in (uid, missing):
        for call in (
            bob.GetImage(catalog_pb2.GetImageRequest(uid=target)),
            bob.DeleteImage(catalog_pb2.DeleteImageRequest(uid=target)),
            bob.UpdateTags(catalog_pb2.UpdateTagsRequest(uid=target, add=["mine"])),
            bob.DownloadImage(catalog_pb2.DownloadImageRequest(uid=target)).read(),
            bob.GetThumbnail(catalog_pb2.GetThumbnailRequest(uid=target)).read(),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "no such image")
    assert (await bob.ListImages(catalog_pb2.ListImagesRequest())).images == []
    assert (await bob.SearchImages(catalog_pb2.SearchImagesRequest(query="tab"))).images == []
    assert (await bob.ListCategories(catalog_pb2.ListCategoriesRequest())).categories == []
    assert (await bob.ListTags(catalog_pb2.ListTagsRequest())).tags == []
    assert (await bob.ListImages(catalog_pb2.ListImagesRequest(tag="tabby"))).images == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await bob.ListImages(catalog_pb2.ListImagesRequest(all_users=True))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await alice.GetImage(catalog_pb2.GetImageRequest(uid=uid))).uid == uid


async def test_admin_lists_and_reads_everything(world, test_keys):
    catalog, _ = world
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    admin = catalog.client(test_keys.token("root", roles=("admin",)))
    a, b = (await alice.upload(_img(70))).uid, (await bob.upload(_img(71))).uid
    everyone = await _all_pages(admin.ListImages, catalog_pb2.ListImagesRequest(all_users=True, page_size=1))
    assert everyone == [b, a]
    assert (await admin.ListImages(catalog_pb2.ListImagesRequest())).images == []
    assert (await admin.GetImage(catalog_pb2.GetImageRequest(uid=a))).owner_id == "alice"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.DeleteImage(catalog_pb2.DeleteImageRequest(uid=a))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_arguments_are_invalid(world, test_keys):
    catalog, _ = world
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    for n in range(3):
        await alice.upload(_img(80 + n))
    alice_token = (await alice.ListImages(catalog_pb2.ListImagesRequest(page_size=1))).next_page_token
    assert alice_token
    calls = [
        alice.GetImage(catalog_pb2.GetImageRequest(uid="../../etc/passwd")),
        alice.GetImage(catalog_pb2.GetImageRequest(uid="")),
        alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid="short")),
        alice.DownloadImage(catalog_pb2.DownloadImageRequest(uid="x" * 23)).read(),
        alice.UpdateTags(catalog_pb2.UpdateTagsRequest(uid="bad uid")),
        alice.ListImages(catalog_pb2.ListImagesRequest(page_size=101)),
        alice.ListImages(catalog_pb2.ListImagesRequest(page_size=-1)),
        alice.ListImages(catalog_pb2.ListImagesRequest(page_token="garbage")),
        alice.ListImages(catalog_pb2.ListImagesRequest(page_token=alice_token, tag="dog")),
        bob.ListImages(catalog_pb2.ListImagesRequest(page_token=alice_token)),
        alice.ListImages(catalog_pb2.ListImagesRequest(min_score=1.5)),
        alice.SearchImages(catalog_pb2.SearchImagesRequest(query="  ")),
        alice.SearchImages(catalog_pb2.SearchImagesRequest(query="cat", page_token=alice_token)),
        alice.ListTags(catalog_pb2.ListTagsRequest(min_score=-0.1)),
        alice.ListTags(catalog_pb2.ListTagsRequest(limit=1001)),
        alice.ListImages(catalog_pb2.ListImagesRequest(order=7)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert err.value.details()


async def test_search_pages_list_each_image_once_at_its_summed_score(world, test_keys):
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    names = ["beagle", "basset", "pug", "tabby", "dome", "dock", "llama"]
    expected = []
    for n in range(8):
        labels = [(names[(n + k) % 7], round(0.05 + ((n * 7 + k * 3) % 10) / 20, 2)) for k in range(3)]
        data = _img(200 + n)
        classifier.script(data, labels)
        uid = (await alice.upload(data)).uid
        dog = round(sum(score for name, score in labels if name in names[:3]), 6)
        if dog:
            expected.append((dog, n, uid))
    expected = [uid for _, _, uid in sorted(expected, reverse=True)]
    for size in (1, 3, 50):
        request = catalog_pb2.SearchImagesRequest(query="Dogs", page_size=size, min_score=0)
        assert await _all_pages(alice.SearchImages, request) == expected


async def test_control_characters_in_filters_are_invalid(world, test_keys):
    catalog, _ = world
    alice = catalog.client(test_keys.token("alice"))
    for request in (
        catalog_pb2.ListImagesRequest(category="tab\x00by"),
        catalog_pb2.ListImagesRequest(tag="d\x00g"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await alice.ListImages(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


def _photo_taken(n: int, taken: str | None) -> bytes:
    exif = Image.Exif()
    exif[271], exif[272] = "Canon", f"EOS {n}"
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    data = io.BytesIO()
    Image.new("RGB", (16, 12), (n, 90, 90)).save(data, "JPEG", exif=exif)
    return data.getvalue()


async def test_taken_dates_filter_and_order_lists_and_search(world, test_keys):
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    dates = ["2019:05:01 10:00:00", "2023:08:15 18:30:00", None, "2021:01:01 00:00:00"]
    uids = []
    for n, taken in enumerate(dates):
        data = _photo_taken(n, taken)
        classifier.script(data, [("tabby", 0.9)])
        uids.append((await alice.upload(data)).uid)
    first = await alice.GetImage(catalog_pb2.GetImageRequest(uid=uids[0]))
    assert first.taken_at.ToDatetime(tzinfo=UTC) == datetime(2019, 5, 1, 10, tzinfo=UTC)
    assert (first.camera_make, first.camera_model) == ("Canon", "EOS 0")
    undated = await alice.GetImage(catalog_pb2.GetImageRequest(uid=uids[2]))
    assert not undated.HasField("taken_at")

    def stamp(year: int) -> Timestamp:
        value = Timestamp()
        value.FromDatetime(datetime(year, 1, 1, tzinfo=UTC))
        return value

    newest = catalog_pb2.IMAGE_ORDER_TAKEN_NEWEST
    # The undated photo counts as taken when uploaded (now), so it sorts first.
    for size in (1, 2, 50):
        request = catalog_pb2.ListImagesRequest(order=newest, page_size=size)
        assert await _all_pages(alice.ListImages, request) == [uids[2], uids[1], uids[3], uids[0]]
    oldest = catalog_pb2.ListImagesRequest(order=catalog_pb2.IMAGE_ORDER_TAKEN_OLDEST, page_size=1)
    assert await _all_pages(alice.ListImages, oldest) == [uids[0], uids[3], uids[1], uids[2]]
    window = catalog_pb2.ListImagesRequest(taken_after=stamp(2020), taken_before=stamp(2024))
    assert await _all_pages(alice.ListImages, window) == [uids[3], uids[1]]
    search = catalog_pb2.SearchImagesRequest(query="cat", taken_before=stamp(2022), order=newest, page_size=1)
    assert await _all_pages(alice.SearchImages, search) == [uids[3], uids[0]]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.ListImages(catalog_pb2.ListImagesRequest(taken_after=stamp(2024), taken_before=stamp(2020)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("probed", [2, 200])
async def test_several_words_page_by_the_weakest_match(world, test_keys, monkeypatch, probed):
    # With a probe of 2 rows the probe rarely answers, so the joined statement after it pages too; with the real
    # probe of 200 rows the probe alone answers.
    monkeypatch.setattr("services.catalog.store.search._PROBED_ROWS", probed)
    catalog, classifier = world
    alice = catalog.client(test_keys.token("alice"))
    expected = []
    for n in range(9):
        golden, beagle = round(0.05 + (n * 7 % 9) / 20, 2), round(0.05 + (n * 4 % 9) / 20, 2)
        labels = [("golden retriever", golden), ("beagle", beagle)] if n % 4 else [("golden retriever", golden)]
        data = _img(300 + n)
        classifier.script(data, labels)
        uid = (await alice.upload(data)).uid
        if n % 4:
            expected.append((min(golden, beagle), n, uid))
    expected = [uid for _, _, uid in sorted(expected, reverse=True)]
    for size in (1, 2, 3, 50):
        request = catalog_pb2.SearchImagesRequest(query="Retrievers hound", page_size=size, min_score=0)
        assert await _all_pages(alice.SearchImages, request) == expected, size
