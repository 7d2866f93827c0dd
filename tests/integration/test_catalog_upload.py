"""Uploads through a real catalog server: stored, pending while inference is down, duplicates, bad input."""

import asyncio
import io
import time

import grpc
import psycopg
import pytest
from PIL import Image
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.blobstore import LocalBlobStore
from services.catalog.blobstore.s3 import S3BlobStore
from tests.support.catalog_fixtures import upload_messages
from tests.support.images import image_bytes
from tests.support.waiting import eventually


def _rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT uid, owner_id, status, sha256 FROM catalog.images ORDER BY id").fetchall()


async def _objects(blobs) -> list[str]:
    return sorted([b.key async for b in blobs.list("objects/")] + [b.key async for b in blobs.list("thumbs/")])


@pytest.fixture
async def catalog(catalog_server):
    return await catalog_server()


async def test_upload_is_stored_pending_while_inference_is_down(catalog, catalog_dsn, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    data = image_bytes(size=(120, 80), fmt="PNG")
    started = time.monotonic()
    image = await alice.upload(data, "holiday/beach.png")
    assert time.monotonic() - started < 10
    assert image.status == catalog_pb2.IMAGE_STATUS_PENDING
    assert "classifier" in image.status_reason
    assert (image.owner_id, image.filename, image.content_type) == ("alice", "beach.png", "image/png")
    assert (image.width, image.height, image.size_bytes, image.duplicate) == (120, 80, len(data), False)
    assert image.category == "" and not image.labels
    assert _rows(catalog_dsn) == [(image.uid, "alice", "pending", image.sha256)]
    meta, body = await alice.download(image.uid)
    assert body == data and meta.sha256 == image.sha256
    fetched = await alice.GetImage(catalog_pb2.GetImageRequest(uid=image.uid))
    assert fetched.uid == image.uid and fetched.created_at.seconds > 0


async def test_content_type_comes_from_the_bytes(catalog, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(image_bytes(fmt="GIF", mode="P", color=5), "looks-like.jpg")
    assert image.content_type == "image/gif"


async def test_same_bytes_twice_return_the_existing_image(catalog, catalog_dsn, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    data = image_bytes()
    first = await alice.upload(data)
    second = await alice.upload(data, "other-name.jpg")
    assert second.duplicate and second.uid == first.uid and second.filename == first.filename
    assert len(_rows(catalog_dsn)) == 1


async def test_same_bytes_for_two_users_are_stored_once_and_deleted_safely(catalog, test_keys):
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    data = image_bytes((1, 2, 3))
    mine, theirs = await alice.upload(data), await bob.upload(data)
    assert mine.uid != theirs.uid and not theirs.duplicate
    assert await _objects(catalog.blobs) == [f"objects/{mine.sha256}"]
    await alice.GetThumbnail(catalog_pb2.GetThumbnailRequest(uid=mine.uid)).read()
    await alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=mine.uid))
    _, body = await bob.download(theirs.uid)
    assert body == data
    await bob.DeleteImage(catalog_pb2.DeleteImageRequest(uid=theirs.uid))
    assert await _objects(catalog.blobs) == []


async def test_delete_removes_row_and_bytes(catalog, catalog_dsn, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(image_bytes())
    await alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=image.uid))
    assert _rows(catalog_dsn) == []
    assert await _objects(catalog.blobs) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.GetImage(catalog_pb2.GetImageRequest(uid=image.uid))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=image.uid))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_thumbnail_is_generated_once_and_cached(catalog, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(image_bytes(size=(1024, 512)))
    meta, first = await alice.download(image.uid, thumbnail=True)
    assert meta.content_type == "image/jpeg" and meta.size_bytes == len(first)
    assert first[:2] == b"\xff\xd8"
    keys = await _objects(catalog.blobs)
    assert f"thumbs/{image.sha256}-256.jpg" in keys
    _, second = await alice.download(image.uid, thumbnail=True)
    assert second == first


async def test_display_copy_is_made_once_cached_and_removed_with_the_image(catalog, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(image_bytes(size=(3200, 1600)))
    meta, first = await alice.download(image.uid, thumbnail=True, size=catalog_pb2.THUMBNAIL_SIZE_DISPLAY)
    assert (meta.content_type, meta.size_bytes) == ("image/jpeg", len(first))
    with Image.open(io.BytesIO(first)) as shown:
        assert shown.size == (1600, 800)
    assert f"thumbs/{image.sha256}-1600.jpg" in await _objects(catalog.blobs)
    _, again = await alice.download(image.uid, thumbnail=True, size=catalog_pb2.THUMBNAIL_SIZE_DISPLAY)
    assert again == first
    _, small = await alice.download(image.uid, thumbnail=True)
    with Image.open(io.BytesIO(small)) as thumb:
        assert thumb.size == (256, 128)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.download(image.uid, thumbnail=True, size=7)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "size must be" in err.value.details()
    await alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=image.uid))
    assert await _objects(catalog.blobs) == []


async def test_large_upload_streams_in_many_chunks(catalog, test_keys):
    import os

    from PIL import Image

    noisy = Image.frombytes("RGB", (1500, 1500), os.urandom(1500 * 1500 * 3))
    import io

    out = io.BytesIO()
    noisy.save(out, format="PNG")
    data = out.getvalue()
    assert len(data) > 5 * 1024 * 1024
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.stub.UploadImage(upload_messages(data, chunk=256 * 1024), metadata=alice.metadata)
    assert image.size_bytes == len(data)
    _, body = await alice.download(image.uid)
    assert body == data


async def _upload_error(client, messages) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.UploadImage(messages, metadata=client.metadata)
    return err.value


def _header(name="a.jpg"):
    return catalog_pb2.UploadImageRequest(header=catalog_pb2.UploadHeader(filename=name))


def _chunk(data: bytes):
    return catalog_pb2.UploadImageRequest(chunk=data)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "empty"),
        ([_chunk(b"abc")], "first message"),
        ([_header()], "empty"),
        ([_header(), _chunk(b"")], "empty"),
        ([_header(), _chunk(b"abc"), _header()], "only contain chunks"),
        ([_header(), _chunk(b"not an image at all")], "JPEG, PNG, WebP, GIF, BMP, HEIC or AVIF"),
        ([_header(), _chunk(b"x" * (1024 * 1024 + 1))], "at most 1 MiB"),
    ],
)
async def test_bad_uploads_are_invalid_and_leave_nothing(catalog, catalog_dsn, test_keys, messages, message):
    error = await _upload_error(catalog.client(test_keys.token("alice")), iter(messages))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert _rows(catalog_dsn) == []
    assert await _objects(catalog.blobs) == []


async def test_limits_are_enforced(catalog_server, catalog_dsn, test_keys, tmp_path):
    catalog = await catalog_server(max_upload_bytes=2000, max_pixels=10_000, blob_dir=tmp_path / "limits")
    alice = catalog.client(test_keys.token("alice"))
    too_big = await _upload_error(alice, upload_messages(b"\xff" * 1000 + b"x" * 1500, chunk=1000))
    assert too_big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2000 bytes" in too_big.details()
    too_many_pixels = await _upload_error(
        alice, upload_messages(image_bytes(size=(200, 100), fmt="GIF", mode="P", color=1))
    )
    assert too_many_pixels.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "200x100" in too_many_pixels.details()
    assert _rows(catalog_dsn) == []
    assert await _objects(LocalBlobStore(tmp_path / "limits")) == []


async def test_calls_without_a_valid_token_are_refused(catalog, test_keys):
    anonymous = catalog.client("not-a-token")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await anonymous.ListImages(catalog_pb2.ListImagesRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    expired = catalog.client(test_keys.token("alice", ttl=-60))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await expired.upload(image_bytes())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_slow_classifier_leaves_the_upload_pending(catalog_server, scripted_inference, test_keys):
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address, inference_timeout_seconds=0.3)
    data = image_bytes((4, 4, 4))
    classifier.script(data, [("tabby", 0.9)], ["cat"], delay=3)
    started = time.monotonic()
    image = await catalog.client(test_keys.token("alice")).upload(data)
    assert time.monotonic() - started < 2
    assert image.status == catalog_pb2.IMAGE_STATUS_PENDING


async def test_identical_concurrent_uploads_make_one_image(catalog_server, scripted_inference, catalog_dsn, test_keys):
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address)
    alice = catalog.client(test_keys.token("alice"))
    data = image_bytes((5, 5, 5))
    classifier.script(data, [("tabby", 0.9)], ["cat"], delay=0.2)
    results = await asyncio.gather(*(alice.upload(data) for _ in range(4)))
    assert len({image.uid for image in results}) == 1
    assert sorted(image.duplicate for image in results) == [False, True, True, True]
    assert [row[2] for row in _rows(catalog_dsn)] == ["classified"]


async def test_cancelled_upload_leaves_nothing(catalog, catalog_dsn, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    sent = asyncio.Event()

    async def stalling():
        yield catalog_pb2.UploadImageRequest(header=catalog_pb2.UploadHeader(filename="a.jpg"))
        yield catalog_pb2.UploadImageRequest(chunk=image_bytes()[:100])
        sent.set()
        await asyncio.sleep(30)

    call = alice.stub.UploadImage(stalling(), metadata=alice.metadata)
    await sent.wait()
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.2)
    assert _rows(catalog_dsn) == []
    assert await _objects(catalog.blobs) == []


async def test_delete_racing_an_identical_upload_never_loses_bytes(catalog_server, scripted_inference, test_keys):
    _, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address)
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    data = image_bytes((6, 6, 6), size=(300, 200), fmt="PNG")
    for _ in range(5):
        mine = await alice.upload(data)
        _, theirs = await asyncio.gather(
            alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=mine.uid)), bob.upload(data)
        )
        _, body = await bob.download(theirs.uid)
        assert body == data
        await bob.DeleteImage(catalog_pb2.DeleteImageRequest(uid=theirs.uid))
        assert await _objects(catalog.blobs) == []


async def test_thumbnail_of_an_image_that_cannot_be_decoded_is_a_clear_error(catalog, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    # A BMP cut short: the catalog checks only JPEG and PNG for completeness before storing, so with inference
    # unreachable this one is stored pending, its header fine and its pixels cut off.
    whole = image_bytes(size=(400, 300), fmt="BMP")
    image = await alice.upload(whole[: len(whole) // 3])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.download(image.uid, thumbnail=True)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot be decoded" in err.value.details()
    assert await _objects(catalog.blobs) == [f"objects/{image.sha256}"]


async def test_identical_upload_survives_the_cancellation_of_the_one_it_joined(
    catalog_server, scripted_inference, catalog_dsn, test_keys
):
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address)
    alice = catalog.client(test_keys.token("alice"))
    data = image_bytes((11, 11, 11))
    classifier.script(data, [("tabby", 0.9)], ["cat"], delay=1.0)
    first = asyncio.ensure_future(alice.upload(data))
    await eventually(lambda: classifier.calls == 1, awaiting="the first upload to reach the classifier")
    second = asyncio.ensure_future(alice.upload(data))
    await eventually(lambda: classifier.calls == 2, awaiting="the identical upload to reach the classifier")
    first.cancel()
    image = await second
    assert image.status == catalog_pb2.IMAGE_STATUS_CLASSIFIED
    assert _rows(catalog_dsn) == [(image.uid, "alice", "classified", image.sha256)]
    _, body = await alice.download(image.uid)
    assert body == data


async def test_delete_succeeds_while_object_storage_is_down(catalog_server, catalog_dsn, test_keys):
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    blobs = S3BlobStore.connect(
        endpoint=f"{host}:{port}", access_key="k", secret_key="s", bucket="down", secure=False, region="us-east-1"
    )
    catalog = await catalog_server(blob_store=blobs)
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(image_bytes((12, 12, 12)))
    moto.stop()
    # The row goes now; the sweeper removes the bytes once storage is back.
    await alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=image.uid))
    assert _rows(catalog_dsn) == []
