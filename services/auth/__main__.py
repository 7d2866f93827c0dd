"""`python -m services.auth [serve|migrate|create-admin|promote-admin|create-service-account|disable-user|enable-user|
delete-user|generate-key|public-key]`."""

import argparse
import contextlib
import functools
import getpass
import logging
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg_pool import PoolTimeout
from pydantic import SecretStr

from services.auth.config import CommandSettings, Settings
from services.auth.keys import KeyConfigError, load_keyset, public_pem, write_private_key
from services.auth.passwords import InvalidCredentials, PasswordHasher, check_password, check_username
from services.auth.server import MIGRATIONS, SCHEMA, create_server, hash_parameters
from services.auth.store import AuthStore, User, UsernameTaken
from services.common.db import SchemaNotReady, migrate, open_pool
from services.common.logging import setup_logging
from services.common.server import run, serve_until_signalled
from services.common.settings import InvalidSettings, load_settings, settings_or_report

log = logging.getLogger("services.auth")


USER_ACTIONS = {
    "disable": "disable a user: sessions end, tokens are refused everywhere within the revocation bound",
    "enable": "enable a disabled user again",
    "delete": "delete a user and their sessions; tokens are refused everywhere within the revocation bound",
}


class CommandError(Exception):
    """A command cannot do what was asked; the message tells the operator why."""


async def serve(settings: Settings) -> None:
    running = await create_server(settings)
    await serve_until_signalled(running, grace=settings.grace_seconds)


def run_migrations(settings: Settings) -> list[str]:
    applied = migrate(settings.postgres_dsn, schema=SCHEMA, directory=MIGRATIONS)
    log.info("auth schema is up to date", extra={"applied": applied})
    return applied


def read_password(secret: SecretStr | None, *, prompt: Callable[[str], str] = getpass.getpass) -> str:
    """The password from the environment, else typed twice at a prompt; checked against the password rules."""
    if secret is not None:
        return check_password(secret.get_secret_value())
    if not sys.stdin.isatty():
        raise CommandError("no password in the environment and no terminal to prompt on")
    password = prompt("Password: ")
    if prompt("Repeat password: ") != password:
        raise CommandError("the passwords differ")
    return check_password(password)


async def create_account(settings: Settings, username: str, role: str, password_source: Callable[[], str]) -> str:
    """Creates a user with `role` (and "user") and the operator's password; returns what it did.

    A name somebody already registered is refused: the account would keep its registrant's password, not the
    operator's. Promoting an existing person is `promote-admin`. An existing service account gets the given
    password instead, so rerunning with a rotated secret applies it.
    """
    check_username(username)
    async with _command_store(settings) as (store, hasher):
        return await _create(store, hasher, username, role, password_source)


async def promote_admin(settings: Settings, username: str) -> str:
    """Grants admin to an existing person, who keeps their own password."""
    check_username(username)
    async with _command_store(settings) as (store, _):
        user = await _existing(store, username)
        if "service" in user.roles:
            raise CommandError(f"{user.username!r} is a service account; service accounts cannot be admins")
        if "admin" in user.roles:
            return f"{user.username} ({user.id}) is already an admin; nothing changed"
        await store.grant_role(user.id, "admin")
        return f"promoted existing user {user.username} ({user.id}) to admin; they log in with their own password"


async def change_user(settings: Settings, username: str, action: str) -> str:
    """Disables, enables or deletes a user; a disabled or deleted user's tokens stop working within the bound."""
    check_username(username)
    async with _command_store(settings) as (store, _):
        user = await _existing(store, username)
        if action == "delete":
            await store.delete_user(user.id)
            return f"deleted user {user.username} ({user.id}); their access tokens are now refused"
        await store.set_disabled(user.id, action == "disable")
        if action == "disable":
            return f"disabled user {user.username} ({user.id}); their sessions ended and their tokens are refused"
        return f"enabled user {user.username} ({user.id}); they may log in again"


@contextlib.asynccontextmanager
async def _command_store(settings: Settings) -> AsyncIterator[tuple[AuthStore, PasswordHasher]]:
    pool = await open_pool(settings.postgres_dsn, max_size=2, name="auth-command")
    hasher = PasswordHasher(hash_parameters(settings), max_concurrent=1)
    try:
        yield AuthStore(pool, token_lifetime_seconds=settings.access_token_ttl_seconds), hasher
    finally:
        hasher.close()
        await pool.close()


async def _existing(store: AuthStore, username: str) -> User:
    user = await store.user_by_username(username)
    if user is None:
        raise CommandError(f"no user is named {username!r}")
    return user


async def _create(store: AuthStore, hasher: PasswordHasher, username: str, role: str, password_source) -> str:
    user = await store.user_by_username(username)
    if user is not None and role == "service":
        if "service" not in user.roles:
            raise CommandError(f"{user.username!r} exists and is not a service account")
        await store.set_password_hash(user.id, await hasher.hash(password_source()))
        return f"service account {user.username} ({user.id}) exists; password updated"
    if user is not None:
        raise CommandError(
            f"{user.username!r} already exists and keeps its own password; to give that person admin rights, run"
            f" `python -m services.auth promote-admin {user.username}`, else choose another name"
        )
    password_hash = await hasher.hash(password_source())
    try:
        user = await store.create_user(username=username, password_hash=password_hash, roles=sorted({"user", role}))
    except UsernameTaken:
        raise CommandError(f"{username!r} was registered meanwhile; nothing was created") from None
    return f"created {role} {user.username} ({user.id})"


def generate_key(path: Path) -> str:
    write_private_key(path, Ed25519PrivateKey.generate())
    return f"wrote a new Ed25519 signing key to {path} (mode 0600)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.auth", description="Tagsmith auth service.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the gRPC server (the default)")
    commands.add_parser("migrate", help="create or upgrade the auth schema in PostgreSQL")
    admin = commands.add_parser(
        "create-admin",
        help="create a new admin with the operator's password (TAGSMITH_ADMIN_PASSWORD or prompt); "
        "refuses a name that exists",
    )
    admin.add_argument("username")
    promote = commands.add_parser(
        "promote-admin", help="give admin rights to an existing user, who keeps their own password"
    )
    promote.add_argument("username")
    for action, text in USER_ACTIONS.items():
        commands.add_parser(f"{action}-user", help=text).add_argument("username")
    service = commands.add_parser(
        "create-service-account", help="create a service account (password: TAGSMITH_SERVICE_PASSWORD or prompt)"
    )
    service.add_argument("name")
    key = commands.add_parser("generate-key", help="write a new Ed25519 private key (PEM) to a new file")
    key.add_argument("path", type=Path)
    commands.add_parser("public-key", help="print the public half of the signing key, for the extra-keys file")
    return parser


def run_command(args: argparse.Namespace, settings: Settings) -> str | None:
    """Runs one command; returns the line to show the operator, if any."""
    secrets = load_settings(CommandSettings)
    if args.command == "migrate":
        applied = run_migrations(settings)
        return f"applied {', '.join(applied)}" if applied else "nothing to apply"
    if args.command == "create-admin":
        source = functools.partial(read_password, secrets.admin_password)
        return run(create_account(settings, args.username, "admin", source))
    if args.command == "promote-admin":
        return run(promote_admin(settings, args.username))
    if args.command in {f"{action}-user" for action in USER_ACTIONS}:
        return run(change_user(settings, args.username, args.command.removesuffix("-user")))
    if args.command == "create-service-account":
        source = functools.partial(read_password, secrets.service_password)
        return run(create_account(settings, args.name, "service", source))
    if args.command == "generate-key":
        return generate_key(args.path)
    if args.command == "public-key":
        return public_pem(load_keyset(settings).signing_key.public_key()).decode().rstrip()
    run(serve(settings))
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (settings := settings_or_report(Settings)) is None:
        return 2
    setup_logging("auth", level=settings.log_level, fmt=settings.log_format)
    try:
        message = run_command(args, settings)
    except (CommandError, InvalidCredentials, InvalidSettings, KeyConfigError, SchemaNotReady, FileExistsError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except (psycopg.OperationalError, PoolTimeout) as exc:
        sys.stderr.write(f"error: cannot reach PostgreSQL at TAGSMITH_POSTGRES_DSN: {exc}\n")
        return 1
    if message:
        sys.stdout.write(message + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
