"""Login throttling per account and per client address, kept in PostgreSQL so every replica shares it."""

import ipaddress
import math
from dataclasses import dataclass
from urllib.parse import unquote

import psycopg
from psycopg_pool import AsyncConnectionPool

HOUR_SECONDS = 3600.0


@dataclass(frozen=True)
class LoginLimits:
    window_seconds: float
    per_account: int
    per_address: int
    per_account_hour: int


@dataclass(frozen=True)
class Rule:
    """At most `limit` failures for one key of `scope` within `window_seconds`."""

    scope: str
    window_seconds: float
    limit: int


@dataclass(frozen=True)
class Attempt:
    """A login attempt admitted by the limiter, recorded as a failure until it succeeds."""

    account: str
    failure_ids: tuple[int, ...]


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class LoginLimiter:
    """Counts failed logins per account and per address in sliding windows.

    Each attempt is recorded as a failure *before* the password is checked and deleted if it succeeds,
    under an advisory lock on the account: concurrent guesses at one account, even through several replicas,
    can never exceed its limits. The address is not locked, so that all logins arriving through one proxy
    are not serialized; concurrent attempts from one address may overshoot its limit by the concurrency.
    """

    def __init__(self, pool: AsyncConnectionPool, limits: LoginLimits) -> None:
        self._pool = pool
        self._limits = limits
        self._rules = (
            Rule("account", limits.window_seconds, limits.per_account),
            Rule("account", HOUR_SECONDS, limits.per_account_hour),
            Rule("address", limits.window_seconds, limits.per_address),
        )

    async def begin(self, *, account: str, address: str) -> Attempt:
        """Admits an attempt or raises Throttled with the seconds until the next one is allowed."""
        keys = {"account": account, "address": address}
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"login:{account}",))
            wait = max([await _wait(conn, rule, keys[rule.scope]) for rule in self._rules])
            if wait > 0:
                raise Throttled(wait)
            ids = [await _record(conn, scope, key) for scope, key in keys.items()]
        return Attempt(account=account, failure_ids=tuple(ids))

    async def succeeded(self, attempt: Attempt) -> None:
        """Forgets the account's failures and this attempt; the address keeps its other failures."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM auth.login_failures WHERE (scope = 'account' AND key = %s) OR id = ANY(%s)",
                (attempt.account, list(attempt.failure_ids)),
            )

    async def prune(self) -> int:
        """Deletes failures too old to count under any rule; returns how many."""
        keep = max(self._limits.window_seconds, HOUR_SECONDS)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM auth.login_failures WHERE created_at < now() - make_interval(secs => %s)", (keep,)
            )
            return cur.rowcount


async def _wait(conn: psycopg.AsyncConnection, rule: Rule, key: str) -> int:
    """Seconds until `key` is under the rule's limit again: when its limit-th newest failure leaves the window."""
    cur = await conn.execute(
        "SELECT EXTRACT(EPOCH FROM created_at + make_interval(secs => %(window)s) - now())::float8"
        " FROM auth.login_failures WHERE scope = %(scope)s AND key = %(key)s"
        " AND created_at > now() - make_interval(secs => %(window)s)"
        " ORDER BY created_at DESC OFFSET %(skip)s LIMIT 1",
        {"window": rule.window_seconds, "scope": rule.scope, "key": key, "skip": rule.limit - 1},
    )
    row = await cur.fetchone()
    return 0 if row is None else max(1, math.ceil(row[0]))


async def _record(conn: psycopg.AsyncConnection, scope: str, key: str) -> int:
    cur = await conn.execute("INSERT INTO auth.login_failures (scope, key) VALUES (%s, %s) RETURNING id", (scope, key))
    return (await cur.fetchone())[0]


def client_address(peer: str, forwarded_for: str | None, *, trust_forwarded_for: bool) -> str:
    """The key failures are counted under for the caller.

    The gRPC peer looks like "ipv4:10.0.0.7:51234" or "ipv6:%5B::1%5D:51234". When trusted, the last
    `x-forwarded-for` entry wins: it is the one our gateway appended, earlier ones come from the client.
    IPv6 clients are keyed by their /64, since one host usually owns the whole prefix.
    """
    candidate = None
    if trust_forwarded_for and forwarded_for:
        candidate = _parse_ip(forwarded_for.split(",")[-1].strip())
    if candidate is None:
        candidate = _parse_ip(_peer_host(peer))
    if candidate is None:
        return peer or "unknown"
    if isinstance(candidate, ipaddress.IPv6Address):
        if candidate.ipv4_mapped is not None:
            return str(candidate.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{candidate}/64", strict=False))
    return str(candidate)


def _peer_host(peer: str) -> str:
    _, _, rest = unquote(peer).partition(":")
    host = rest.rsplit(":", 1)[0] if rest.count(":") >= 1 else rest
    return host.strip("[]")


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
