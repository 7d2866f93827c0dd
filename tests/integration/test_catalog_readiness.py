"""The catalog's readiness follows its object storage as well as its database: a real S3 endpoint stopped and
started again."""

import time
import uuid

from grpc_health.v1 import health_pb2, health_pb2_grpc
from moto.server import ThreadedMotoServer

from services.catalog.blobstore.s3 import S3BlobStore
from services.catalog.server import SERVICE_NAME
from services.common.channels import open_channel
from tests.support.waiting import eventually

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def _health_becomes(address: str, service: str, status: int, limit: float = 10.0) -> float:
    started = time.monotonic()
    async with open_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def in_status() -> bool:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            return reply.status == status

        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        await eventually(in_status, awaiting=f"{service} to be {name}", within=limit, interval=0.1)
    return time.monotonic() - started


async def test_object_storage_down_makes_the_catalog_unready_and_back_ready(catalog_server):
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    try:
        store = S3BlobStore.connect(
            endpoint=f"{host}:{port}",
            access_key="tagsmith-test",
            secret_key="tagsmith-test-secret",
            bucket=f"tagsmith-test-{uuid.uuid4().hex[:12]}",
            secure=False,
            region="us-east-1",
            retries=0,
        )
        catalog = await catalog_server(blob_store=store)
        assert await _health_becomes(catalog.address, SERVICE_NAME, SERVING) < 1
        s3.stop()
        assert await _health_becomes(catalog.address, SERVICE_NAME, NOT_SERVING) < 5
        assert await _health_becomes(catalog.address, "object_storage", NOT_SERVING) < 1
        assert await _health_becomes(catalog.address, "database", SERVING) < 1
        assert await _health_becomes(catalog.address, "", SERVING) < 1
        s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        s3.start()
        assert await _health_becomes(catalog.address, SERVICE_NAME, SERVING) < 5
    finally:
        s3.stop()
