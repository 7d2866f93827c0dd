"""SQL for users and refresh tokens in the `auth` schema."""

import enum
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from services.auth.passwords import username_key
from services.common.db import one_row

log = logging.getLogger(__name__)

ROLES = ("user", "admin", "service")
_USER_COLUMNS = "id::text AS id, username, password_hash, roles, created_at, disabled_at IS NOT NULL AS disabled"
# Revocation entries outlive the tokens they cover by the verifiers' clock leeway.
REVOCATION_MARGIN_SECONDS = 60


@dataclass(frozen=True)
class User:
    id: str
    username: str
    password_hash: str = field(repr=False)
    roles: list[str]
    created_at: datetime
    disabled: bool = False


class UsernameTaken(Exception):
    """Another user already has this username, compared case-insensitively."""


class RefreshOutcome(enum.Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"


@dataclass(frozen=True)
class Rotation:
    """The result of presenting a refresh token: the outcome, and the user and session when it was rotated."""

    outcome: RefreshOutcome
    user: User | None = None
    session_id: str = ""


@dataclass(frozen=True)
class Revoked:
    """A session or user whose access tokens issued up to `revoked_at` (Unix seconds) are refused."""

    kind: str
    subject_id: str
    revoked_at: int
    expires_at: int


class AuthStore:
    """Users, refresh-token families and refresh tokens, and the revocation list, on a shared connection pool.

    `token_lifetime_seconds` is the access tokens' lifetime: a revocation is listed that long (plus a margin),
    after which every token it covers has expired anyway.
    """

    def __init__(self, pool: AsyncConnectionPool, *, token_lifetime_seconds: int = 86_400) -> None:
        self._pool = pool
        self._revocation_seconds = token_lifetime_seconds + REVOCATION_MARGIN_SECONDS

    async def create_user(self, *, username: str, password_hash: str, roles: list[str]) -> User:
        query = f"INSERT INTO auth.users (username, password_hash, roles) VALUES (%s, %s, %s) RETURNING {_USER_COLUMNS}"
        try:
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=class_row(User))
                await cur.execute(query, (username, password_hash, roles))
                return one_row(await cur.fetchone(), "creating a user")
        except psycopg.errors.UniqueViolation:
            raise UsernameTaken(username) from None

    async def user_by_username(self, username: str) -> User | None:
        """The user whose name matches case-insensitively.

        Lower-cased here, not by PostgreSQL: its lower() maps some non-ASCII letters ("İ") to ASCII ones, which
        would let a look-alike name reach an account while the login limiter counts it under another key.
        """
        return await self._one_user(
            f"SELECT {_USER_COLUMNS} FROM auth.users WHERE lower(username) = %s", username_key(username)
        )

    async def user_by_id(self, user_id: str) -> User | None:
        if not _is_uuid(user_id):
            return None
        return await self._one_user(f"SELECT {_USER_COLUMNS} FROM auth.users WHERE id = %s", user_id)

    async def _one_user(self, query: str, value: str) -> User | None:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(User))
            await cur.execute(query, (value,))
            return await cur.fetchone()

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE auth.users SET password_hash = %s, updated_at = now() WHERE id = %s", (password_hash, user_id)
            )

    async def grant_role(self, user_id: str, role: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE auth.users SET roles = array_append(roles, %s), updated_at = now()"
                " WHERE id = %s AND NOT %s = ANY(roles)",
                (role, user_id, role),
            )

    async def start_family(self, *, user_id: str, token_hash: bytes, ttl_seconds: int) -> str:
        """Records the first refresh token of a new login session; returns the session id."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("INSERT INTO auth.refresh_families (user_id) VALUES (%s) RETURNING id", (user_id,))
            (family_id,) = one_row(await cur.fetchone(), "starting a session")
            await _insert_token(conn, family_id, token_hash, ttl_seconds)
        return str(family_id)

    async def rotate(self, *, old_hash: bytes, new_hash: bytes, ttl_seconds: int) -> Rotation:
        """Spends a refresh token and records its successor; a spent token presented again revokes its family.

        Every change to a family's tokens first locks the family row, so concurrent uses of one token
        cannot both succeed and a revocation always covers the tokens created before it.
        """
        async with self._pool.connection() as conn, conn.transaction():
            family = await _lock_family(conn, old_hash)
            if family is None:
                return Rotation(RefreshOutcome.UNKNOWN)
            family_id, user_id, revoked = family
            if revoked:
                return Rotation(RefreshOutcome.REVOKED)
            cur = await conn.execute(
                "SELECT used_at IS NOT NULL, expires_at <= now() FROM auth.refresh_tokens WHERE token_hash = %s",
                (old_hash,),
            )
            # The family lock was taken through this token's row, so the row is there.
            used, expired = one_row(await cur.fetchone(), "reading a locked refresh token")
            if used:
                await self._revoke_families(conn, "id = %s", family_id)
                return Rotation(RefreshOutcome.REUSED, await _user(conn, user_id))
            user = await _user(conn, user_id)
            if expired or user.disabled:
                return Rotation(RefreshOutcome.EXPIRED if expired else RefreshOutcome.REVOKED)
            await conn.execute("UPDATE auth.refresh_tokens SET used_at = now() WHERE token_hash = %s", (old_hash,))
            await _insert_token(conn, family_id, new_hash, ttl_seconds)
            return Rotation(RefreshOutcome.ROTATED, user, str(family_id))

    async def revoke_family(self, *, token_hash: bytes, user_id: str) -> bool:
        """Ends the session the refresh token belongs to, if it is this user's; True if one was revoked now."""
        if not _is_uuid(user_id):
            return False
        async with self._pool.connection() as conn, conn.transaction():
            revoked = await self._revoke_families(
                conn,
                "id = (SELECT family_id FROM auth.refresh_tokens WHERE token_hash = %s) AND user_id = %s",
                token_hash,
                user_id,
            )
            return revoked > 0

    async def _revoke_families(self, conn: psycopg.AsyncConnection, where: str, *params) -> int:
        """Revokes the matching live sessions and lists them as revoked; returns how many."""
        cur = await conn.execute(
            f"UPDATE auth.refresh_families SET revoked_at = now() WHERE revoked_at IS NULL AND {where} RETURNING id",
            params,
        )
        sessions = [row[0] for row in await cur.fetchall()]
        for session_id in sessions:
            await self._list_revoked(conn, "session", session_id)
        return len(sessions)

    async def _list_revoked(self, conn: psycopg.AsyncConnection, kind: str, subject_id) -> None:
        """Lists a session or user as revoked now. "Now" is this host's clock, the one tokens' `iat` comes from,
        not the database's, so a clock difference between the two cannot let a token issued before through."""
        now = time.time()
        await conn.execute(
            "INSERT INTO auth.revocations (kind, subject_id, revoked_at, expires_at)"
            " VALUES (%(kind)s, %(id)s, to_timestamp(%(now)s), to_timestamp(%(until)s))"
            " ON CONFLICT (kind, subject_id) DO UPDATE SET revoked_at = EXCLUDED.revoked_at,"
            " expires_at = EXCLUDED.expires_at",
            {"kind": kind, "id": subject_id, "now": now, "until": now + self._revocation_seconds},
        )

    async def delete_user(self, user_id: str) -> None:
        """Deletes the user with everything cascading from it, and lists the user as revoked."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM auth.users WHERE id = %s", (user_id,))
            await self._list_revoked(conn, "user", user_id)

    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disables a user (its sessions end, its tokens are listed as revoked) or enables it again."""
        async with self._pool.connection() as conn, conn.transaction():
            if not disabled:
                await conn.execute(
                    "UPDATE auth.users SET disabled_at = NULL, updated_at = now() WHERE id = %s", (user_id,)
                )
                return
            await conn.execute(
                "UPDATE auth.users SET disabled_at = coalesce(disabled_at, now()), updated_at = now() WHERE id = %s",
                (user_id,),
            )
            await self._revoke_families(conn, "user_id = %s", user_id)
            await self._list_revoked(conn, "user", user_id)

    async def revocations(self) -> list[Revoked]:
        """Every revocation still covering a token that has not expired."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT kind, subject_id::text, floor(extract(epoch FROM revoked_at))::bigint,"
                " ceil(extract(epoch FROM expires_at))::bigint FROM auth.revocations WHERE expires_at > now()"
            )
            return [Revoked(*row) for row in await cur.fetchall()]

    async def prune(self) -> int:
        """Deletes expired refresh tokens and the families left empty; returns the rows deleted."""
        async with self._pool.connection() as conn:
            tokens = await conn.execute("DELETE FROM auth.refresh_tokens WHERE expires_at < now()")
            families = await conn.execute(
                "DELETE FROM auth.refresh_families f WHERE NOT EXISTS"
                " (SELECT 1 FROM auth.refresh_tokens t WHERE t.family_id = f.id)"
            )
            revocations = await conn.execute("DELETE FROM auth.revocations WHERE expires_at <= now()")
            return tokens.rowcount + families.rowcount + revocations.rowcount


async def _lock_family(conn: psycopg.AsyncConnection, token_hash: bytes) -> tuple | None:
    cur = await conn.execute(
        "SELECT id, user_id::text, revoked_at IS NOT NULL FROM auth.refresh_families"
        " WHERE id = (SELECT family_id FROM auth.refresh_tokens WHERE token_hash = %s) FOR UPDATE",
        (token_hash,),
    )
    return await cur.fetchone()


async def _insert_token(conn: psycopg.AsyncConnection, family_id, token_hash: bytes, ttl_seconds: int) -> None:
    await conn.execute(
        "INSERT INTO auth.refresh_tokens (token_hash, family_id, expires_at)"
        " VALUES (%s, %s, now() + make_interval(secs => %s))",
        (token_hash, family_id, ttl_seconds),
    )


async def _user(conn: psycopg.AsyncConnection, user_id: str) -> User:
    cur = conn.cursor(row_factory=class_row(User))
    await cur.execute(f"SELECT {_USER_COLUMNS} FROM auth.users WHERE id = %s", (user_id,))
    # A session's user cannot be deleted while its family row is locked (the family references it).
    return one_row(await cur.fetchone(), "reading a session's user")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
