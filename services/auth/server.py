"""Builds the auth gRPC server: keys, database pool, hasher, limiter, servicer and the shared plumbing."""

import asyncio
import contextlib
import logging
from pathlib import Path

from psycopg_pool import AsyncConnectionPool
from tagsmith.auth.v1 import auth_pb2_grpc

from services.auth.config import Settings
from services.auth.issuer import TokenIssuer
from services.auth.keys import KeySet, load_keyset
from services.auth.passwords import HashParameters, PasswordHasher
from services.auth.ratelimit import LoginLimiter, LoginLimits, RegisterLimits
from services.auth.servicer import OPEN_METHODS, SERVICE_NAME, AuthServicer, Dependencies
from services.auth.store import AuthStore
from services.common.db import DatabaseProbe, check_schema, open_service_pool
from services.common.interceptors import AuthInterceptor
from services.common.server import RunningServer, start_server
from services.common.tokens import Revocations, TokenVerifier

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "auth"
PRUNE_INTERVAL_SECONDS = 600.0


def hash_parameters(settings: Settings) -> HashParameters:
    return HashParameters(settings.hash_memory_kib, settings.hash_time_cost, settings.hash_parallelism)


def own_verifier(settings: Settings, keys: KeySet, store: AuthStore) -> TokenVerifier:
    """Verifies tokens against this server's own key set and revocations, without a network call to itself."""

    async def revocations() -> Revocations:
        listed = await store.revocations()
        return Revocations(
            sessions={entry.subject_id: entry.revoked_at for entry in listed if entry.kind == "session"},
            users={entry.subject_id: entry.revoked_at for entry in listed if entry.kind == "user"},
        )

    return TokenVerifier(
        jwks_source=keys.jwks_source,
        revocation_source=revocations,
        revocation_refresh_seconds=settings.revocations_refresh_seconds,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        min_refresh_seconds=0,
    )


async def create_server(
    settings: Settings, *, verifier: TokenVerifier | None = None, keys: KeySet | None = None
) -> RunningServer:
    """Starts the server on settings.host:port (0 picks a free port); stop it with RunningServer.stop()."""
    keys = keys or load_keyset(settings)
    pool = await open_service_pool(settings, name="auth")
    hasher = PasswordHasher(hash_parameters(settings), max_concurrent=settings.max_concurrent_hashes)
    try:
        await check_schema(pool, schema=SCHEMA, directory=MIGRATIONS)
        await hasher.warm_up()
        deps = _dependencies(settings, keys, pool, hasher)
        database = DatabaseProbe(settings.postgres_dsn)
        running = await _start(settings, deps, verifier or own_verifier(settings, keys, deps.store), database)
    except BaseException:
        hasher.close()
        await pool.close()
        raise
    pruner = asyncio.create_task(_prune_forever(deps.store, deps.limiter))
    running.on_stop(lambda: _close(pool, hasher, pruner))
    running.on_stop(database.close)
    return running


async def _start(
    settings: Settings, deps: Dependencies, verifier: TokenVerifier, database: DatabaseProbe
) -> RunningServer:
    servicer = AuthServicer(deps)
    return await start_server(
        settings,
        register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        interceptors=[AuthInterceptor(verifier, open_methods=OPEN_METHODS)],
        dependencies={"database": database},
    )


def _dependencies(settings: Settings, keys: KeySet, pool: AsyncConnectionPool, hasher: PasswordHasher) -> Dependencies:
    return Dependencies(
        store=AuthStore(pool, token_lifetime_seconds=settings.access_token_ttl_seconds),
        hasher=hasher,
        issuer=TokenIssuer(
            keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.access_token_ttl_seconds,
        ),
        limiter=LoginLimiter(pool, login_limits(settings), register_limits(settings)),
        keys=keys,
        refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        trust_forwarded_for=settings.trust_forwarded_for,
    )


def login_limits(settings: Settings) -> LoginLimits:
    return LoginLimits(
        window_seconds=settings.login_window_seconds,
        per_account_address=settings.login_max_failures_per_account_address,
        per_address=settings.login_max_failures_per_address,
        per_account_hour=settings.login_max_failures_per_account_hour,
    )


def register_limits(settings: Settings) -> RegisterLimits:
    return RegisterLimits(
        window_seconds=settings.register_window_seconds, per_address=settings.register_max_per_address
    )


async def _prune_forever(store: AuthStore, limiter: LoginLimiter) -> None:
    """Deletes expired refresh tokens and stale login failures now and then; every replica may run it."""
    while True:
        await asyncio.sleep(PRUNE_INTERVAL_SECONDS)
        try:
            deleted = await store.prune() + await limiter.prune()
            log.info("pruned expired rows", extra={"rows": deleted})
        except Exception:
            log.warning("pruning expired rows failed; will retry", exc_info=True)


async def _close(pool: AsyncConnectionPool, hasher: PasswordHasher, pruner: asyncio.Task) -> None:
    pruner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pruner
    hasher.close()
    await pool.close()
