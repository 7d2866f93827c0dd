"""Operating the catalog: the migrate command, the real auth service's tokens, and PostgreSQL connection loss."""

import os
import subprocess
import sys
from pathlib import Path

import grpc
import psycopg
import pytest
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.server import MIGRATIONS
from services.common.db import migration_files
from tests.support.catalog_fixtures import catalog_database
from tests.support.images import image_bytes, sample_image
from tests.support.ports import free_port
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


def _run(command: str, dsn: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'gen'}:{REPO}",
        "TAGSMITH_POSTGRES_DSN": dsn,
        "TAGSMITH_LOG_FORMAT": "text",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.catalog", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_command_is_idempotent(postgres_dsn):
    first = _run("migrate", postgres_dsn)
    assert first.returncode == 0, first.stderr
    assert "0001_create_images.sql" in first.stderr and "0002_storage_quota.sql" in first.stderr
    second = _run("migrate", postgres_dsn)
    assert second.returncode == 0 and "none pending" in second.stderr
    with psycopg.connect(postgres_dsn) as conn:
        applied = conn.execute("SELECT count(*) FROM catalog.schema_migrations").fetchone()[0]
    assert applied == len(migration_files(MIGRATIONS))


async def test_serves_again_after_a_postgres_restart(restartable_postgres, catalog_server, test_keys):
    catalog = await catalog_server(postgres_dsn=catalog_database(restartable_postgres.admin_dsn))
    alice = catalog.client(test_keys.token("alice"))
    image = await alice.upload(image_bytes())
    restartable_postgres.stop()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.ListImages(catalog_pb2.ListImagesRequest(), timeout=1)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    restartable_postgres.start()
    reply = await alice.ListImages(catalog_pb2.ListImagesRequest())
    assert [listed.uid for listed in reply.images] == [image.uid]
    assert (await alice.upload(image_bytes((2, 2, 2)))).uid


async def test_worker_uses_its_service_account_with_real_auth_and_inference(
    auth_server, auth_harness, catalog_server, modelserver_addr
):
    from services.inference.config import Settings as InferenceSettings
    from services.inference.server import create_server as create_inference

    _, auth_addr = auth_server
    account = await auth_harness.service_account(auth_addr, name="catalog-worker")
    user_token = await auth_harness.user_token(auth_addr, "carol")
    inference_port = free_port()
    catalog = await catalog_server(
        identity_from_settings=True,
        auth_addr=auth_addr,
        service_username=account.username,
        service_password=account.password,
        inference_addr=f"127.0.0.1:{inference_port}",
        worker_enabled=True,
        worker_poll_seconds=0.1,
        worker_max_backoff_seconds=0.4,
    )
    carol = catalog.client(user_token)
    image = await carol.upload(sample_image("chelsea"))
    assert image.status == catalog_pb2.IMAGE_STATUS_PENDING
    inference = await create_inference(
        InferenceSettings(
            host="127.0.0.1",
            port=inference_port,
            metrics_port=None,
            auth_addr=auth_addr,
            tfserving_addr=modelserver_addr,
        )
    )
    try:

        async def settled() -> catalog_pb2.Image | None:
            current = await carol.GetImage(catalog_pb2.GetImageRequest(uid=image.uid))
            return None if current.status == catalog_pb2.IMAGE_STATUS_PENDING else current

        image = await eventually(settled, awaiting="the pending image to be classified", within=60, interval=0.1)
    finally:
        await inference.stop(0)
    assert image.status == catalog_pb2.IMAGE_STATUS_CLASSIFIED, image.status_reason
    assert "cat" in image.tags
