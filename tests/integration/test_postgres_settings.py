"""One PostgreSQL settings block for auth and catalog: the pool it describes, and the warning that a server starting
with the former pool size name logs."""

import logging
import time

import pytest
from psycopg_pool import PoolTimeout

from services.common.db import open_service_pool
from services.common.settings import PostgresSettings

WARNING_LOGGER = "services.common.db"


async def test_the_pool_is_sized_and_timed_by_the_settings(postgres_dsn):
    settings = PostgresSettings(postgres_dsn=postgres_dsn, postgres_pool_size=2, postgres_checkout_timeout_seconds=0.3)
    pool = await open_service_pool(settings, name="settings-test")
    try:
        async with pool.connection() as first, pool.connection() as second:
            assert first.info.backend_pid != second.info.backend_pid
            started = time.monotonic()
            with pytest.raises(PoolTimeout):
                async with pool.connection():
                    pass
            assert time.monotonic() - started < 2, "a third call waits the checkout timeout, not the pool's 30 s"
    finally:
        await pool.close()


def _deprecation_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == WARNING_LOGGER and r.levelno == logging.WARNING and "TAGSMITH_POOL_SIZE" in r.getMessage()
    ]


async def test_auth_started_with_the_former_name_uses_it_and_warns(auth_harness, monkeypatch, caplog):
    monkeypatch.setenv("TAGSMITH_POOL_SIZE", "3")
    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        _, address = await auth_harness.start()
    assert auth_harness.settings(address).postgres_pool_size == 3
    assert _deprecation_warnings(caplog) == [
        "TAGSMITH_POOL_SIZE is deprecated and stops working in the next release: rename it TAGSMITH_POSTGRES_POOL_SIZE"
    ]


async def test_catalog_prefers_the_new_name_and_says_the_former_is_ignored(catalog_server, monkeypatch, caplog):
    monkeypatch.setenv("TAGSMITH_POOL_SIZE", "3")
    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        catalog = await catalog_server(postgres_pool_size=5)
    assert catalog.settings.postgres_pool_size == 5
    assert _deprecation_warnings(caplog) == [
        "TAGSMITH_POOL_SIZE (3) is deprecated and ignored: TAGSMITH_POSTGRES_POOL_SIZE (5) is set; "
        "remove TAGSMITH_POOL_SIZE"
    ]


async def test_no_warning_under_the_new_name(auth_harness, monkeypatch, caplog):
    monkeypatch.delenv("TAGSMITH_POOL_SIZE", raising=False)
    monkeypatch.setenv("TAGSMITH_POSTGRES_POOL_SIZE", "3")
    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        _, address = await auth_harness.start()
    assert auth_harness.settings(address).postgres_pool_size == 3
    assert _deprecation_warnings(caplog) == []
