"""Through the gateway to a real catalog: a file the catalog refuses mid-stream answers 413 and leaves no row,
and no task of the upload is left pending."""

import asyncio
import gc
import logging

import httpx
import psycopg
import pytest

from services.gateway.app import create_app
from services.gateway.clients import Backends
from services.gateway.config import Settings
from tests.support.images import image_bytes
from tests.support.ports import free_port

MIB = 1024 * 1024


@pytest.fixture
async def gateway_to_catalog(catalog_server):
    catalog = await catalog_server(max_upload_bytes=MIB)
    closed = f"127.0.0.1:{free_port()}"
    settings = Settings(catalog_addr=catalog.address, auth_addr=closed, inference_addr=closed, max_upload_bytes=8 * MIB)
    backends = Backends.open(settings)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, backends=backends)), base_url="http://gateway.test"
    )
    yield client
    await client.aclose()
    await backends.close()


async def test_a_file_the_catalog_refuses_mid_stream_is_413_and_leaves_nothing(
    gateway_to_catalog, catalog_dsn, test_keys, caplog
):
    headers = {"Authorization": f"Bearer {test_keys.token('alice')}"}
    big = image_bytes(size=(64, 48), fmt="PNG") + bytes(4 * MIB)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for _ in range(10):
            reply = await gateway_to_catalog.post("/v1/images", headers=headers, files={"image": ("big.png", big)})
            assert reply.status_code == 413
            assert "larger than the limit of 1048576 bytes" in reply.json()["error"]["message"]
        small = await gateway_to_catalog.post(
            "/v1/images", headers=headers, files={"image": ("small.png", image_bytes(fmt="PNG"))}
        )
        assert small.status_code == 201
        await asyncio.sleep(0.2)
        gc.collect()
        await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    with psycopg.connect(catalog_dsn) as conn:
        assert conn.execute("SELECT status FROM catalog.images").fetchall() == [("pending",)]
