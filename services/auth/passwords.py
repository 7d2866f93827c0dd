"""Username and password rules, and argon2id hashing off the event loop with bounded memory."""

import asyncio
import re
import secrets
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

USERNAME_MIN, USERNAME_MAX = 3, 32
PASSWORD_MIN, PASSWORD_MAX = 8, 256
# ASCII only, so no two usernames look alike or differ only by Unicode normalization.
_USERNAME = re.compile(r"^[A-Za-z0-9._-]+$")


class InvalidCredentials(ValueError):
    """A username or password breaks a rule; the message says which, in words a person can act on."""


def check_username(username: str) -> str:
    """Returns the username unchanged if it follows the rules, else raises InvalidCredentials."""
    if not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        raise InvalidCredentials(f"username must be {USERNAME_MIN} to {USERNAME_MAX} characters long")
    if not _USERNAME.match(username):
        raise InvalidCredentials("username may contain only letters, digits, '.', '_' and '-'")
    return username


def username_key(username: str) -> str:
    """The form usernames are compared in: case-insensitive."""
    return username.lower()


def normalize_password(password: str) -> str:
    """NFKC-normalizes, so the same password typed on different keyboards or systems matches."""
    return unicodedata.normalize("NFKC", password)


def check_password(password: str) -> str:
    """Returns the normalized password if its length is allowed, else raises InvalidCredentials."""
    password = normalize_password(password)
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidCredentials(f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    return password


@dataclass(frozen=True)
class HashParameters:
    memory_kib: int
    time_cost: int
    parallelism: int


class PasswordHasher:
    """argon2id in a thread pool; a semaphore caps concurrent hashes so a login flood cannot exhaust memory.

    Each hash holds `memory_kib` for its duration, so peak hashing memory is max_concurrent x memory_kib.
    Callers that give up (deadline, cancellation) while waiting for the semaphore never start hashing.
    """

    def __init__(self, params: HashParameters, *, max_concurrent: int) -> None:
        self._argon = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        self._slots = asyncio.Semaphore(max_concurrent)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="argon2")
        self._dummy_hash: str | None = None

    async def _run(self, fn, *args):
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def hash(self, password: str) -> str:
        return await self._run(self._argon.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if `password` matches; with no hash (unknown user) spends the same time on a dummy hash."""
        if password_hash is None:
            password_hash = await self._dummy()
            await self._run(self._matches, password_hash, password)
            return False
        return await self._run(self._matches, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        try:
            return self._argon.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
        return self._dummy_hash

    async def warm_up(self) -> None:
        """Computes the dummy hash up front so the first unknown-user login is not faster than the rest."""
        await self._dummy()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
