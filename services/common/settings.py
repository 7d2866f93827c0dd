"""Typed settings read from TAGSMITH_* environment variables; each service subclasses ServiceSettings."""

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every gRPC service has. Subclasses add their own fields."""

    model_config = SettingsConfigDict(env_prefix="TAGSMITH_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface the gRPC server binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; unset disables it, 0 picks a free one."
    )
    log_level: str = Field("INFO", description="Python logging level name.")
    log_format: str = Field("json", pattern="^(json|text)$", description="json for machines, text for people.")
    grace_seconds: float = Field(
        5.0, ge=0, description="On SIGTERM, how long in-flight calls may finish; keep it below the pod's grace period."
    )


class TokenSettings(BaseSettings):
    """How a service verifies access tokens: where auth publishes its keys, and what the tokens must say."""

    model_config = SettingsConfigDict(env_prefix="TAGSMITH_", extra="ignore", frozen=True)

    auth_addr: str = Field("127.0.0.1:50052", description="Auth service gRPC address (its public keys come from here).")
    jwt_issuer: str = Field("tagsmith-auth", description="Required `iss` claim.")
    jwt_audience: str = Field("tagsmith", description="Required `aud` claim.")
    jwks_min_refresh_seconds: float = Field(
        10.0, ge=0, description="Unknown `kid`s refetch the keys at most this often."
    )
    revocations_refresh_seconds: float = Field(
        15.0,
        gt=0,
        le=30,
        description="How often the revocation list (logged-out sessions, disabled and deleted users) is refetched; "
        "a revoked token stops working within twice this.",
    )
    auth_cache_dir: Path | None = Field(
        None,
        description="Directory where the last keys and revocation list fetched from auth are kept, so a restart "
        "while auth is down still accepts valid tokens; unset keeps them in memory only.",
    )


class PostgresSettings(BaseSettings):
    """Where a service keeps its tables, and how many connections it may hold there."""

    model_config = SettingsConfigDict(env_prefix="TAGSMITH_", extra="ignore", frozen=True)

    postgres_dsn: str = Field(
        "postgresql://tagsmith@127.0.0.1:5432/tagsmith",
        description="PostgreSQL connection string; auth and catalog may share one database, each in a schema of its "
        "own (`auth`, `catalog`).",
    )
    postgres_pool_size: int = Field(
        10,
        ge=1,
        le=200,
        description="Most PostgreSQL connections one process opens; keep replicas x this below the server's "
        "max_connections.",
    )
    postgres_checkout_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long a call waits for a database connection before answering UNAVAILABLE."
    )
    pool_size: int | None = Field(
        None,
        ge=1,
        le=200,
        description="Deprecated: the former name of TAGSMITH_POSTGRES_POOL_SIZE, read in this release only (with a "
        "warning); TAGSMITH_POSTGRES_POOL_SIZE wins when both are set.",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_former_pool_size(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("pool_size") is not None and "postgres_pool_size" not in values:
            return {**values, "postgres_pool_size": values["pool_size"]}
        return values

    def deprecations(self) -> list[str]:
        """What to warn the operator about: settings still given under a name that is going away."""
        if self.pool_size is None:
            return []
        if self.pool_size != self.postgres_pool_size:
            return [
                f"TAGSMITH_POOL_SIZE ({self.pool_size}) is deprecated and ignored: TAGSMITH_POSTGRES_POOL_SIZE "
                f"({self.postgres_pool_size}) is set; remove TAGSMITH_POOL_SIZE"
            ]
        return [
            "TAGSMITH_POOL_SIZE is deprecated and stops working in the next release: rename it "
            "TAGSMITH_POSTGRES_POOL_SIZE"
        ]


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class InvalidSettings(ValueError):
    """The environment holds settings the service cannot run with; the message names each problem."""


def load_settings(
    settings_class: type[SettingsT], *, sources: Mapping[str, str] | None = None, **overrides: Any
) -> SettingsT:
    """Reads the settings from the environment, `overrides` (e.g. command-line flags) winning, turning pydantic's
    report into one line per problem, named by where the value came from: `sources` names the overrides' origins
    (e.g. {"max_batch_size": "--max_batch_size"}), every other setting is named by its environment variable.

    Only names and messages are kept: pydantic's full text echoes the input, secrets included.
    """
    try:
        return settings_class(**overrides)
    except ValidationError as exc:
        problems = (f"{_source(settings_class, e['loc'], sources or {})}: {e['msg']}" for e in exc.errors())
        raise InvalidSettings("invalid settings:\n  " + "\n  ".join(problems)) from None


def _source(settings_class: type[BaseSettings], loc: tuple[int | str, ...], sources: Mapping[str, str]) -> str:
    """What the operator wrote to give the setting at `loc`: its override's source, else its environment variable."""
    field = ".".join(map(str, loc))
    if field in sources:
        return sources[field]
    return f"{settings_class.model_config.get('env_prefix', '')}{field or 'settings'}".upper()


def settings_or_report(
    settings_class: type[SettingsT], *, sources: Mapping[str, str] | None = None, **overrides: Any
) -> SettingsT | None:
    """load_settings for an entry point: on bad settings the report goes to stderr and None comes back, so the
    caller exits with status 2."""
    try:
        return load_settings(settings_class, sources=sources, **overrides)
    except InvalidSettings as exc:
        sys.stderr.write(f"{exc}\n")
        return None
