"""The shared pool's cheap check: no round trip for a quiet connection, a real check once the server closed it."""

import psycopg

from services.common.db import check_if_disturbed, open_pool
from tests.support.waiting import eventually


async def _terminate(dsn: str, backend_pid: int) -> None:
    """Ends a server process and returns once it has exited (its goodbye is on the way to the client)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        cur = await admin.execute("SELECT pg_terminate_backend(%s, 5000)", (backend_pid,))
        assert (await cur.fetchone())[0], f"backend {backend_pid} did not exit"


async def test_a_quiet_connection_is_lent_without_a_round_trip(postgres_dsn):
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute("SELECT 1")
        sent = []
        real_execute = conn.execute
        conn.execute = lambda query, *args, **kwargs: sent.append(query) or real_execute(query, *args, **kwargs)
        await check_if_disturbed(conn)
        assert sent == []


async def test_a_connection_the_server_closed_fails_the_check(postgres_dsn):
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as victim:
        await _terminate(postgres_dsn, victim.info.backend_pid)

        async def check_fails() -> bool:
            try:
                await check_if_disturbed(victim)
            except psycopg.OperationalError:
                return True
            return False

        # The server's goodbye reaches the socket shortly after the backend exits.
        await eventually(check_fails, awaiting="the check to fail on the closed connection", within=2, interval=0.02)


async def test_the_pool_replaces_a_terminated_connection_before_lending_it(postgres_dsn):
    pool = await open_pool(postgres_dsn, min_size=1, max_size=1, name="check-test")
    try:
        await pool.wait()
        async with pool.connection() as conn:
            first_pid = conn.info.backend_pid
        await _terminate(postgres_dsn, first_pid)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            assert (await cur.fetchone())[0] != first_pid
    finally:
        await pool.close()
