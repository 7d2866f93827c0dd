"""The pending queue: the real classifier catching up, retries, failures, and replicas sharing the work."""

import asyncio
import io

import grpc
import psycopg
import pytest
from PIL import Image
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.classify import StoredImageClassifier
from services.catalog.inference_client import InferenceClient
from services.catalog.store import CatalogStore
from services.catalog.worker import PendingWorker, WorkerPolicy
from services.common.channels import open_channel
from services.common.db import open_pool
from services.common.identity import StaticTokenProvider
from services.common.imaging import register_openers
from tests.support.catalog_fixtures import Script
from tests.support.images import image_bytes, sample_image
from tests.support.ports import free_port
from tests.support.waiting import eventually

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
FAST_WORKER = {
    "worker_enabled": True,
    "worker_poll_seconds": 0.1,
    "worker_max_backoff_seconds": 0.4,
    "worker_retry_seconds": 0.05,
}


async def _wait_for_status(client, uid: str, status, timeout: float = 60.0) -> catalog_pb2.Image:
    async def image_in_status() -> catalog_pb2.Image | None:
        image = await client.GetImage(catalog_pb2.GetImageRequest(uid=uid))
        return image if image.status == status else None

    name = catalog_pb2.ImageStatus.Name(status)
    return await eventually(image_in_status, awaiting=f"image {uid} to be {name}", within=timeout, interval=0.1)


def _tried(dsn: str) -> bool:
    """Whether the worker has claimed a pending image since its upload (a claim moves its next attempt on)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT bool_and(next_attempt_at > created_at) FROM catalog.images").fetchone()[0]


async def test_real_classifier_labels_an_upload(catalog_server, inference_server, test_keys):
    inference = await inference_server()
    catalog = await catalog_server(inference_addr=f"127.0.0.1:{inference.port}", inference_timeout_seconds=30)
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(sample_image("chelsea"), "chelsea.jpg")
    assert image.status == catalog_pb2.IMAGE_STATUS_CLASSIFIED, image.status_reason
    assert image.category in CAT_CLASSES
    assert image.model_name == "efficientnet_lite0" and image.model_version
    assert "cat" in image.tags
    assert image.labels[0].score > image.labels[-1].score
    found = await alice.SearchImages(catalog_pb2.SearchImagesRequest(query="Cats"))
    assert [i.uid for i in found.images] == [image.uid]


async def test_upload_keeps_the_thumbnail_inference_made_and_the_upright_size(
    catalog_server, inference_server, test_keys
):
    inference = await inference_server()
    catalog = await catalog_server(inference_addr=f"127.0.0.1:{inference.port}", inference_timeout_seconds=30)
    alice = catalog.client(test_keys.token("alice"))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(sample_image("chelsea"))).transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", exif=exif)
    image = await alice.upload(buffer.getvalue(), "sideways.jpg")
    assert image.status == catalog_pb2.IMAGE_STATUS_CLASSIFIED, image.status_reason
    assert (image.width, image.height, image.orientation) == (451, 300, 6)
    stored = [blob.key async for blob in catalog.blobs.list("thumbs/")]
    assert stored == [f"thumbs/{image.sha256}-256.jpg"]  # stored with the upload, before any request
    _, thumbnail = await alice.download(image.uid, thumbnail=True)
    assert Image.open(io.BytesIO(thumbnail)).size == (256, 170)


async def test_heic_upload_is_classified_and_served_as_heic(catalog_server, inference_server, test_keys):
    register_openers()
    inference = await inference_server()
    catalog = await catalog_server(inference_addr=f"127.0.0.1:{inference.port}", inference_timeout_seconds=30)
    alice = catalog.client(test_keys.token("alice"))
    data = sample_image("chelsea", "HEIF", quality=90)
    image = await alice.upload(data, "IMG_0001.HEIC")
    assert image.status == catalog_pb2.IMAGE_STATUS_CLASSIFIED, image.status_reason
    assert image.category in CAT_CLASSES and image.content_type == "image/heic"
    meta, original = await alice.download(image.uid)
    assert (meta.content_type, original) == ("image/heic", data)


@pytest.fixture
async def inference_on_port(modelserver_addr, test_keys):
    """Starts the real inference service on a chosen port (the shared factory always picks a free one)."""
    from services.inference.config import Settings
    from services.inference.server import create_server

    started = []

    async def start(port: int):
        settings = Settings(host="127.0.0.1", port=port, metrics_port=None, tfserving_addr=modelserver_addr)
        started.append(await create_server(settings, verifier=test_keys.verifier()))

    yield start
    for running in started:
        await running.stop(0)


async def test_pending_image_is_classified_when_inference_comes_back(
    catalog_server, catalog_dsn, inference_on_port, test_keys
):
    port = free_port()
    catalog = await catalog_server(inference_addr=f"127.0.0.1:{port}", **FAST_WORKER)
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(sample_image("chelsea"), "chelsea.jpg")
    assert image.status == catalog_pb2.IMAGE_STATUS_PENDING
    await eventually(lambda: _tried(catalog_dsn), awaiting="the worker to try while inference is down")
    await inference_on_port(port)
    image = await _wait_for_status(alice, image.uid, catalog_pb2.IMAGE_STATUS_CLASSIFIED)
    assert image.status == catalog_pb2.IMAGE_STATUS_CLASSIFIED
    assert image.category in CAT_CLASSES and image.status_reason == ""
    assert [blob.key async for blob in catalog.blobs.list("thumbs/")] == [f"thumbs/{image.sha256}-256.jpg"]
    counts = await alice.ListCategories(catalog_pb2.ListCategoriesRequest())
    assert [(c.category, c.count) for c in counts.categories] == [(image.category, 1)]


async def test_repeated_errors_end_in_failed_with_a_reason(catalog_server, scripted_inference, test_keys):
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address, worker_max_attempts=3, **FAST_WORKER)
    data = image_bytes((9, 9, 9))
    classifier.script(data, error=grpc.StatusCode.INTERNAL)
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(data)
    assert image.status == catalog_pb2.IMAGE_STATUS_PENDING
    image = await _wait_for_status(alice, image.uid, catalog_pb2.IMAGE_STATUS_FAILED, timeout=20)
    assert image.status == catalog_pb2.IMAGE_STATUS_FAILED
    assert "internal" in image.status_reason
    assert classifier.calls == 4  # the upload's own try, then three worker attempts


async def test_a_pending_image_the_model_rejects_fails_at_once(catalog_server, scripted_inference, test_keys):
    """Stored pending while the classifier erred; when it later rejects the image, no retry can help."""
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address, worker_max_attempts=5, **FAST_WORKER)
    data = image_bytes((8, 8, 8))
    classifier.script(data, error=grpc.StatusCode.UNAVAILABLE)
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(data)
    assert image.status == catalog_pb2.IMAGE_STATUS_PENDING
    classifier.script(data, error=grpc.StatusCode.INVALID_ARGUMENT)
    image = await _wait_for_status(alice, image.uid, catalog_pb2.IMAGE_STATUS_FAILED, timeout=20)
    assert "rejected" in image.status_reason


async def test_an_upload_the_model_rejects_is_refused_and_not_kept(catalog_server, scripted_inference, test_keys):
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address)
    data = image_bytes((8, 8, 8))
    classifier.script(data, error=grpc.StatusCode.INVALID_ARGUMENT)
    alice = catalog.client(test_keys.token("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.upload(data)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await alice.ListImages(catalog_pb2.ListImagesRequest())).images == []


async def test_two_replicas_share_the_queue_without_overlap(catalog_server, catalog_dsn, scripted_inference, test_keys):
    classifier, address = await scripted_inference()
    working = classifier.default
    classifier.default = Script(error=grpc.StatusCode.INTERNAL)  # every upload stays pending
    catalog = await catalog_server(inference_addr=address)
    alice = catalog.client(test_keys.token("alice"))
    uids = {(await alice.upload(image_bytes((n, 0, 0), fmt="PNG"))).uid for n in range(12)}
    classifier.default, classifier.calls = working, 0
    channel = open_channel(address)
    pools = [await open_pool(catalog_dsn, max_size=3) for _ in range(2)]
    try:
        workers = [
            PendingWorker(
                store=CatalogStore(pool),
                classifier=StoredImageClassifier(
                    blobs=catalog.blobs, inference=InferenceClient(channel), timeout=10, concurrency=4
                ),
                tokens=StaticTokenProvider(test_keys.token("catalog-worker", roles=("service",))),
                policy=WorkerPolicy(batch_size=5),
            )
            for pool in pools
        ]
        settled = 0
        while settled < 12:
            done = await asyncio.gather(*(worker.run_once() for worker in workers))
            assert sum(done) > 0
            settled += sum(done)
    finally:
        await channel.close()
        for pool in pools:
            await pool.close()
    assert settled == 12 and classifier.calls == 12
    listed = await alice.ListImages(catalog_pb2.ListImagesRequest())
    assert {i.uid for i in listed.images} == uids
    assert {i.status for i in listed.images} == {catalog_pb2.IMAGE_STATUS_CLASSIFIED}


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_transient_errors_keep_images_pending_without_counting(
    catalog_server, scripted_inference, test_keys, code
):
    classifier, address = await scripted_inference()
    catalog = await catalog_server(inference_addr=address, worker_max_attempts=1, **FAST_WORKER)
    data = image_bytes((7, 7, 7))
    classifier.script(data, error=code)
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(data)
    await eventually(lambda: classifier.calls >= 2, awaiting="the worker to retry the transient error")
    image = await alice.GetImage(catalog_pb2.GetImageRequest(uid=image.uid))
    assert image.status == catalog_pb2.IMAGE_STATUS_PENDING
    assert classifier.calls >= 2
    classifier.scripts.clear()
    image = await _wait_for_status(alice, image.uid, catalog_pb2.IMAGE_STATUS_CLASSIFIED, timeout=20)
    assert image.category == "tabby"
