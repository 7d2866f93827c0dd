"""Storage quotas through a real catalog server: enforced atomically, duplicates free, deletes give room back."""

import asyncio

import grpc
import psycopg
import pytest
from tagsmith.catalog.v1 import catalog_pb2

from tests.support.images import image_bytes


def _rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM catalog.images").fetchone()[0]


async def _usage(client) -> catalog_pb2.Usage:
    return await client.GetUsage(catalog_pb2.GetUsageRequest())


async def test_usage_counts_bytes_and_images_against_the_quota(catalog_server, test_keys):
    catalog = await catalog_server(quota_bytes=10_000_000, quota_images=5)
    alice = catalog.client(test_keys.token("alice"))
    assert await _usage(alice) == catalog_pb2.Usage(bytes_limit=10_000_000, images_limit=5)
    first, second = image_bytes(color=(1, 1, 1)), image_bytes(color=(2, 2, 2))
    await alice.upload(first)
    await alice.upload(second)
    usage = await _usage(alice)
    assert (usage.bytes_used, usage.images_used) == (len(first) + len(second), 2)


async def test_an_upload_over_the_image_count_is_refused_with_the_numbers(catalog_server, catalog_dsn, test_keys):
    catalog = await catalog_server(quota_images=2)
    alice = catalog.client(test_keys.token("alice"))
    await alice.upload(image_bytes(color=(1, 1, 1)))
    await alice.upload(image_bytes(color=(2, 2, 2)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.upload(image_bytes(color=(3, 3, 3)))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == "storage quota exceeded: you have 2 of 2 images; delete some to upload more"
    assert ("error-reason", "STORAGE_QUOTA_EXCEEDED") in tuple(refused.value.trailing_metadata())
    assert _rows(catalog_dsn) == 2
    assert len([blob async for blob in catalog.blobs.list("objects/")]) == 2


async def test_an_upload_over_the_byte_quota_is_refused(catalog_server, test_keys):
    data = image_bytes(size=(200, 200), fmt="PNG")
    catalog = await catalog_server(quota_bytes=len(data) + 10)
    alice = catalog.client(test_keys.token("alice"))
    await alice.upload(data)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.upload(image_bytes(color=(9, 9, 9)))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"you use {len(data)} of {len(data) + 10} bytes" in refused.value.details()


async def test_bytes_the_caller_already_has_do_not_count_twice(catalog_server, test_keys):
    catalog = await catalog_server(quota_images=1)
    alice = catalog.client(test_keys.token("alice"))
    data = image_bytes()
    first = await alice.upload(data)
    again = await alice.upload(data, "copy.jpg")
    assert again.duplicate and again.uid == first.uid
    assert (await _usage(alice)).images_used == 1


async def test_quotas_are_per_user(catalog_server, test_keys):
    catalog = await catalog_server(quota_images=1)
    data = image_bytes()
    await catalog.client(test_keys.token("alice")).upload(data)
    bob = catalog.client(test_keys.token("bob"))
    await bob.upload(data)
    assert (await _usage(bob)).images_used == 1


async def test_deleting_gives_the_room_back(catalog_server, test_keys):
    catalog = await catalog_server(quota_images=1)
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(image_bytes(color=(1, 1, 1)))
    await alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=image.uid))
    assert (await _usage(alice)).images_used == 0
    await alice.upload(image_bytes(color=(2, 2, 2)))


async def test_concurrent_uploads_cannot_overshoot(catalog_server, catalog_dsn, test_keys):
    catalog = await catalog_server(quota_images=3, postgres_pool_size=8)
    alice = catalog.client(test_keys.token("alice"))
    results = await asyncio.gather(
        # Colours far apart: JPEG makes nearly equal solid colours byte-identical, and a duplicate costs no quota.
        *(alice.upload(image_bytes(color=(i * 20, 7, 7))) for i in range(12)),
        return_exceptions=True,
    )
    stored = [r for r in results if isinstance(r, catalog_pb2.Image)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(stored) == 3 and len(refused) == 9
    assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert _rows(catalog_dsn) == 3
    assert (await _usage(alice)).images_used == 3


async def test_a_refused_upload_releases_its_reservation(catalog_server, scripted_inference, test_keys):
    """Rows of uploads in progress count; one refused by the classifier gives its share back."""
    servicer, address = await scripted_inference()
    catalog = await catalog_server(quota_images=1, inference_addr=address)
    alice = catalog.client(test_keys.token("alice"))
    bad = image_bytes(color=(6, 6, 6))
    servicer.script(bad, error=grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.aio.AioRpcError):
        await alice.upload(bad)
    assert (await _usage(alice)).images_used == 0
    await alice.upload(image_bytes(color=(7, 7, 7)))
