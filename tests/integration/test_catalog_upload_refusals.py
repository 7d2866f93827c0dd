"""Uploads the catalog refuses or loses midway leave nothing behind: no row, no bytes."""

import asyncio

import grpc
import psycopg
import pytest
from tagsmith.catalog.v1 import catalog_pb2

from tests.support.catalog_fixtures import upload_messages
from tests.support.images import image_bytes
from tests.support.waiting import eventually


def _row_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM catalog.images").fetchone()[0]


async def _objects(blobs) -> list[str]:
    return [blob.key async for blob in blobs.list("objects/")]


async def _eventually_empty(dsn: str, blobs) -> None:
    async def left_behind() -> tuple[int, list[str]]:
        return _row_count(dsn), await _objects(blobs)

    async def nothing_left() -> bool:
        return await left_behind() == (0, [])

    try:
        await eventually(nothing_left, awaiting="no rows and no objects left behind", within=5)
    except AssertionError:
        raise AssertionError(f"left behind (rows, objects): {await left_behind()}") from None


@pytest.fixture
async def classifier(scripted_inference):
    servicer, address = await scripted_inference()
    return servicer, address


async def test_an_image_the_classifier_cannot_read_is_refused_and_not_kept(
    catalog_server, classifier, catalog_dsn, test_keys
):
    servicer, address = classifier
    catalog = await catalog_server(inference_addr=address)
    alice = catalog.client(test_keys.token("alice"))
    data = image_bytes(fmt="PNG")
    servicer.script(data, error=grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.upload(data, "half.png")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "scripted failure"
    assert _row_count(catalog_dsn) == 0
    assert await _objects(catalog.blobs) == []


async def test_a_refused_copy_does_not_remove_the_same_bytes_someone_else_stored(
    catalog_server, classifier, catalog_dsn, test_keys
):
    servicer, address = classifier
    catalog = await catalog_server(inference_addr=address)
    data = image_bytes(fmt="PNG", color=(9, 9, 9))
    kept = await catalog.client(test_keys.token("bob")).upload(data)
    servicer.script(data, error=grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.aio.AioRpcError):
        await catalog.client(test_keys.token("alice")).upload(data)
    _, body = await catalog.client(test_keys.token("bob")).download(kept.uid)
    assert body == data and _row_count(catalog_dsn) == 1


async def test_an_unreachable_classifier_still_stores_the_upload_as_pending(catalog_server, test_keys):
    catalog = await catalog_server()
    image = await catalog.client(test_keys.token("alice")).upload(image_bytes())
    assert image.status == catalog_pb2.IMAGE_STATUS_PENDING


async def test_a_stream_cancelled_mid_file_leaves_no_row(catalog_server, catalog_dsn, test_keys):
    catalog = await catalog_server()
    stub = catalog.client(test_keys.token("alice"))
    call = stub.stub.UploadImage(metadata=stub.metadata)
    messages = list(upload_messages(image_bytes(size=(800, 600)) + bytes(3 * 1024 * 1024), chunk=512 * 1024))
    for message in messages[:3]:
        await call.write(message)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.3)
    await _eventually_empty(catalog_dsn, catalog.blobs)


async def test_a_call_cancelled_while_classifying_is_undone(catalog_server, classifier, catalog_dsn, test_keys):
    """The client goes away after the row and the bytes are stored, while the classifier works: both are removed."""
    servicer, address = classifier
    catalog = await catalog_server(inference_addr=address)
    alice = catalog.client(test_keys.token("alice"))
    data = image_bytes(color=(4, 5, 6))
    servicer.script(data, [("tabby", 0.9)], delay=1.5)
    upload = asyncio.ensure_future(alice.upload(data))
    await eventually(lambda: _row_count(catalog_dsn), awaiting="the upload's row", within=2, interval=0.01)
    assert _row_count(catalog_dsn) == 1
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    await _eventually_empty(catalog_dsn, catalog.blobs)


async def test_uploads_cancelled_at_every_stage_never_leave_a_row(catalog_server, classifier, catalog_dsn, test_keys):
    """Many uploads cut at staggered moments (receiving, storing, classifying): none leaves an invisible row."""
    servicer, address = classifier
    servicer.default.delay = 0.05
    catalog = await catalog_server(inference_addr=address)
    alice = catalog.client(test_keys.token("alice"))
    uploads = [asyncio.ensure_future(alice.upload(image_bytes(color=(i, 0, 0)))) for i in range(30)]
    for index, upload in enumerate(uploads):
        await asyncio.sleep(0.002 * (index % 10))
        upload.cancel()
    await asyncio.gather(*uploads, return_exceptions=True)

    def statuses_once_settled() -> tuple[list[str]] | None:
        # An undone upload deletes its row first and its bytes after: wait for both.
        with psycopg.connect(catalog_dsn) as conn:
            statuses = [row[0] for row in conn.execute("SELECT status FROM catalog.images")]
        return None if "uploading" in statuses else (statuses,)

    (statuses,) = await eventually(statuses_once_settled, awaiting="no row left uploading", within=5)
    assert len(await _objects(catalog.blobs)) == len(statuses)
