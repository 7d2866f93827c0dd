"""Model upgrades: batches re-label outdated images, keep manual and hidden tags, and resume where they stopped."""

import grpc
import pytest
from pydantic import SecretStr
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.server import open_runtime
from services.common.identity import StaticTokenProvider
from tests.support.images import image_bytes


@pytest.fixture
async def world(catalog_server, scripted_inference, test_keys):
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address)
    alice = catalog.client(test_keys.token("alice"))
    admin = catalog.client(test_keys.token("root", roles=("admin",)))
    return catalog, classifier, alice, admin


async def test_reclassify_in_batches_keeps_manual_and_hidden_tags(world):
    _, classifier, alice, admin = world
    images = [image_bytes((n, 50, 50), fmt="PNG") for n in range(3)]
    for data in images:
        classifier.script(data, [("beagle", 0.6)], ["beagle", "dog"])
    uids = [(await alice.upload(data)).uid for data in images]
    await alice.UpdateTags(catalog_pb2.UpdateTagsRequest(uid=uids[0], add=["rex"], remove=["dog"]))
    classifier.model_version = "2"
    for data in images[:2]:
        classifier.script(data, [("basset", 0.8), ("beagle", 0.1)], ["basset", "dog"])
    classifier.script(images[2], error=grpc.StatusCode.INVALID_ARGUMENT)

    first = await admin.Reclassify(catalog_pb2.ReclassifyRequest(batch_size=2))
    assert (first.reclassified, first.failed, first.remaining, first.model_version) == (2, 0, 1, "2")
    second = await admin.Reclassify(catalog_pb2.ReclassifyRequest(batch_size=2))
    assert (second.reclassified, second.failed, second.remaining) == (0, 1, 0)
    done = await admin.Reclassify(catalog_pb2.ReclassifyRequest())
    assert (done.reclassified, done.failed, done.remaining) == (0, 0, 0)

    relabelled = await alice.GetImage(catalog_pb2.GetImageRequest(uid=uids[0]))
    assert (relabelled.category, relabelled.model_version) == ("basset", "2")
    assert [label.label for label in relabelled.labels] == ["basset", "beagle"]
    assert relabelled.tags[0] == "rex" and "basset" in relabelled.tags
    assert "dog" not in relabelled.tags  # "dog" stays hidden
    kept = await alice.GetImage(catalog_pb2.GetImageRequest(uid=uids[2]))
    assert (kept.category, kept.model_version, kept.status) == ("beagle", "1", catalog_pb2.IMAGE_STATUS_CLASSIFIED)
    counts = await alice.ListCategories(catalog_pb2.ListCategoriesRequest())
    assert [(c.category, c.count) for c in counts.categories] == [("basset", 2), ("beagle", 1)]
    found = await alice.SearchImages(catalog_pb2.SearchImagesRequest(query="bassets"))
    assert {i.uid for i in found.images} == set(uids[:2])


async def test_run_all_resumes_and_finishes(world, test_keys):
    catalog, classifier, alice, _ = world
    for n in range(5):
        await alice.upload(image_bytes((n, 60, 60), fmt="PNG"))
    classifier.model_version = "3"
    # What `python -m services.catalog reclassify` runs, minus the login.
    runtime = await open_runtime(catalog.settings, blob_store=catalog.blobs)
    try:
        batches = []
        total = await runtime.reclassifier.run_all(
            StaticTokenProvider(test_keys.token("catalog-worker", roles=("service",))),
            batch_size=2,
            report=batches.append,
        )
    finally:
        await runtime.close()
    assert (total.reclassified, total.remaining, total.model_version) == (5, 0, "3")
    assert [b.remaining for b in batches] == [3, 1, 0]
    listed = await alice.ListImages(catalog_pb2.ListImagesRequest())
    assert {i.model_version for i in listed.images} == {"3"}


async def test_reclassify_is_admin_only_and_needs_inference(world, catalog_server, test_keys):
    _, _, alice, _ = world
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.Reclassify(catalog_pb2.ReclassifyRequest())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    offline = await catalog_server()
    admin = offline.client(test_keys.token("root", roles=("admin",)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.Reclassify(catalog_pb2.ReclassifyRequest())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.Reclassify(catalog_pb2.ReclassifyRequest(batch_size=5000))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_reclassify_command_logs_in_as_the_service_and_resumes_after_an_outage(world, auth_server, auth_harness):
    from services.catalog.__main__ import reclassify

    catalog, classifier, alice, _ = world
    images = [image_bytes((n, 70, 70), fmt="PNG") for n in range(3)]
    uids = [(await alice.upload(data)).uid for data in images]
    _, auth_addr = auth_server
    account = await auth_harness.service_account(auth_addr, name="catalog-worker")
    settings = catalog.settings.model_copy(
        update={
            "auth_addr": auth_addr,
            "service_username": account.username,
            "service_password": SecretStr(account.password),
        }
    )
    classifier.model_version = "2"
    classifier.script(images[1], [("tabby", 0.9)], ["cat"], error=grpc.StatusCode.UNAVAILABLE)

    async def versions() -> list[str]:
        return [(await alice.GetImage(catalog_pb2.GetImageRequest(uid=uid))).model_version for uid in uids]

    assert await reclassify(settings, batch_size=1) == 1  # stopped by the outage after the first batch
    assert await versions() == ["2", "1", "1"]
    first_done = await alice.GetImage(catalog_pb2.GetImageRequest(uid=uids[0]))
    classifier.scripts.clear()
    assert await reclassify(settings, batch_size=1) == 0
    assert await versions() == ["2", "2", "2"]
    again = await alice.GetImage(catalog_pb2.GetImageRequest(uid=uids[0]))
    assert again.classified_at == first_done.classified_at  # resumed: done work is not redone
