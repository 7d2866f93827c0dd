"""`python -m services.auth [serve|migrate|create-admin|create-service-account|generate-key|public-key]`."""

import argparse
import functools
import getpass
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg_pool import PoolTimeout
from pydantic import SecretStr

from services.auth.config import CommandSettings, Settings
from services.auth.keys import KeyConfigError, load_keyset, public_pem, write_private_key
from services.auth.passwords import InvalidCredentials, PasswordHasher, check_password, check_username
from services.auth.server import MIGRATIONS, SCHEMA, create_server, hash_parameters
from services.auth.store import AuthStore, UsernameTaken
from services.common.db import SchemaNotReady, migrate, open_pool
from services.common.logging import setup_logging
from services.common.server import run, serve_until_signalled
from services.common.settings import settings_or_report

log = logging.getLogger("services.auth")


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
    """Creates a user with `role` (and "user"), or grants `role` to an existing one; returns what it did.

    An existing service account also gets the given password, so rerunning with a rotated secret applies it;
    an existing person's password is never changed here.
    """
    check_username(username)
    pool = await open_pool(settings.postgres_dsn, max_size=2, name="auth-command")
    hasher = PasswordHasher(hash_parameters(settings), max_concurrent=1)
    try:
        return await _create_or_grant(AuthStore(pool), hasher, username, role, password_source)
    finally:
        hasher.close()
        await pool.close()


async def _create_or_grant(store: AuthStore, hasher: PasswordHasher, username: str, role: str, password_source) -> str:
    user = await store.user_by_username(username)
    if user is None:
        password_hash = await hasher.hash(password_source())
        try:
            user = await store.create_user(username=username, password_hash=password_hash, roles=sorted({"user", role}))
        except UsernameTaken:
            raise CommandError(f"{username!r} was created concurrently; run the command again") from None
        return f"created {role} {user.username} ({user.id})"
    if role == "service":
        if "service" not in user.roles:
            raise CommandError(f"{user.username!r} exists and is not a service account")
        await store.set_password_hash(user.id, await hasher.hash(password_source()))
        return f"service account {user.username} ({user.id}) exists; password updated"
    await store.grant_role(user.id, role)
    return f"granted {role} to existing user {user.username} ({user.id})"


def generate_key(path: Path) -> str:
    write_private_key(path, Ed25519PrivateKey.generate())
    return f"wrote a new Ed25519 signing key to {path} (mode 0600)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.auth", description="Tagsmith auth service.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the gRPC server (the default)")
    commands.add_parser("migrate", help="create or upgrade the auth schema in PostgreSQL")
    admin = commands.add_parser("create-admin", help="create an admin (password: TAGSMITH_ADMIN_PASSWORD or prompt)")
    admin.add_argument("username")
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
    secrets = CommandSettings()
    if args.command == "migrate":
        applied = run_migrations(settings)
        return f"applied {', '.join(applied)}" if applied else "nothing to apply"
    if args.command == "create-admin":
        source = functools.partial(read_password, secrets.admin_password)
        return run(create_account(settings, args.username, "admin", source))
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
    except (CommandError, InvalidCredentials, KeyConfigError, SchemaNotReady, FileExistsError) as exc:
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
