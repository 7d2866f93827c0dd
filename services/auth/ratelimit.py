"""Login and registration throttling, kept in PostgreSQL so every replica shares it.

Failed logins are counted per account and client address together, as identity providers with "smart lockout"
do: guessing from one address locks that account from that address only. Two wider rules bound guessing spread
over many addresses or accounts, and they spare the addresses an account has logged in from before, so an attack
from elsewhere never locks the owner out where they usually log in. Logins of services (not through the public
API) are counted apart, so the public API can never lock a service account.
"""

import ipaddress
import math
from dataclasses import dataclass
from urllib.parse import unquote

import psycopg
from psycopg_pool import AsyncConnectionPool

from services.common.db import one_row

HOUR_SECONDS = 3600.0
# An address stays familiar to an account this long after its last successful login there.
FAMILIAR_DAYS = 90


@dataclass(frozen=True)
class LoginLimits:
    window_seconds: float
    per_account_address: int
    per_address: int
    per_account_hour: int


@dataclass(frozen=True)
class RegisterLimits:
    window_seconds: float
    per_address: int


@dataclass(frozen=True)
class Rule:
    """At most `limit` events for one key of `scope` within `window_seconds`."""

    scope: str
    window_seconds: float
    limit: int


@dataclass(frozen=True)
class Attempt:
    """A login attempt admitted by the limiter, recorded as a failure until it succeeds."""

    pair_scope: str
    pair_key: str
    failure_ids: tuple[int, ...]


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after / 60))


class LoginLimiter:
    """Admits or refuses logins and registrations before any password is looked at.

    Each login is recorded as a failure *before* the password is checked and deleted if it succeeds, under an
    advisory lock on the account: concurrent guesses at one account, even through several replicas, never exceed
    its limits. The address-wide rule is not locked (all logins behind one proxy would queue), so concurrent
    attempts from one address may overshoot it by their concurrency.
    """

    def __init__(self, pool: AsyncConnectionPool, limits: LoginLimits, registrations: RegisterLimits) -> None:
        self._pool = pool
        self._limits = limits
        self._registrations = registrations
        self._pair = Rule("pair", limits.window_seconds, limits.per_account_address)
        self._internal = Rule("internal", limits.window_seconds, limits.per_account_address)
        self._strangers = (
            Rule("account", HOUR_SECONDS, limits.per_account_hour),
            Rule("address", limits.window_seconds, limits.per_address),
        )

    async def begin(self, *, account: str, address: str, user_id: str | None, public: bool) -> Attempt:
        """Admits an attempt or raises Throttled with the seconds until the next one is allowed."""
        pair_key = f"{account}|{address}"
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"login:{account}",))
            if not public:
                await _admit(conn, [(self._internal, pair_key)])
                return Attempt("internal", pair_key, (await _record(conn, "internal", pair_key),))
            checks = [(self._pair, pair_key)]
            if not await _familiar(conn, user_id, address):
                checks += list(zip(self._strangers, (account, address), strict=True))
            await _admit(conn, checks)
            keys = {"pair": pair_key, "account": account, "address": address}
            ids = [await _record(conn, scope, key) for scope, key in keys.items()]
        return Attempt("pair", pair_key, tuple(ids))

    async def succeeded(self, attempt: Attempt, *, user_id: str, address: str) -> None:
        """Forgets this attempt and the pair's failures, and remembers the address as familiar to the user.

        The account's failures from elsewhere still count: the owner logging in does not reset an attacker.
        """
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM auth.login_failures WHERE (scope = %s AND key = %s) OR id = ANY(%s)",
                (attempt.pair_scope, attempt.pair_key, list(attempt.failure_ids)),
            )
            if attempt.pair_scope == "pair":
                await remember_address(conn, user_id=user_id, address=address)

    async def remember(self, *, user_id: str, address: str) -> None:
        """Makes `address` familiar to the user, e.g. the one it registered from."""
        async with self._pool.connection() as conn:
            await remember_address(conn, user_id=user_id, address=address)

    async def admit_registration(self, address: str) -> None:
        """Counts one registration attempt from `address`, or raises Throttled when it has made too many."""
        rule = Rule("register", self._registrations.window_seconds, self._registrations.per_address)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"register:{address}",))
            await _admit(conn, [(rule, address)])
            await _record(conn, "register", address)

    async def prune(self) -> int:
        """Deletes events too old to count under any rule, and addresses no longer familiar; returns how many."""
        keep = max(self._limits.window_seconds, self._registrations.window_seconds, HOUR_SECONDS)
        async with self._pool.connection() as conn:
            failures = await conn.execute(
                "DELETE FROM auth.login_failures WHERE created_at < now() - make_interval(secs => %s)", (keep,)
            )
            addresses = await conn.execute(
                "DELETE FROM auth.known_addresses WHERE last_login_at < now() - make_interval(days => %s)",
                (FAMILIAR_DAYS,),
            )
            return failures.rowcount + addresses.rowcount


async def remember_address(conn: psycopg.AsyncConnection, *, user_id: str, address: str) -> None:
    await conn.execute(
        "INSERT INTO auth.known_addresses (user_id, address) VALUES (%s, %s)"
        " ON CONFLICT (user_id, address) DO UPDATE SET last_login_at = now()",
        (user_id, address),
    )


async def _familiar(conn: psycopg.AsyncConnection, user_id: str | None, address: str) -> bool:
    if user_id is None:
        return False
    cur = await conn.execute(
        "SELECT 1 FROM auth.known_addresses WHERE user_id = %s AND address = %s"
        " AND last_login_at > now() - make_interval(days => %s)",
        (user_id, address, FAMILIAR_DAYS),
    )
    return await cur.fetchone() is not None


async def _admit(conn: psycopg.AsyncConnection, checks: list[tuple[Rule, str]]) -> None:
    wait = max([await _wait(conn, rule, key) for rule, key in checks])
    if wait > 0:
        raise Throttled(wait)


async def _wait(conn: psycopg.AsyncConnection, rule: Rule, key: str) -> int:
    """Seconds until `key` is under the rule's limit again: when its limit-th newest event leaves the window."""
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
    return int(one_row(await cur.fetchone(), "recording a failed login")[0])


def client_address(peer: str, claimed: str | None, *, trust_claimed: bool) -> str:
    """The key attempts are counted under for the caller.

    The gRPC peer looks like "ipv4:10.0.0.7:51234" or "ipv6:%5B::1%5D:51234". When trusted, the address the
    gateway claims for its client wins (the last entry, should it be a list). IPv6 clients are keyed by their
    /64, since one host usually owns the whole prefix.
    """
    candidate = None
    if trust_claimed and claimed:
        candidate = _parse_ip(claimed.split(",")[-1].strip())
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
