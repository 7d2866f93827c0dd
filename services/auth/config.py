"""Settings of the auth service, read from TAGSMITH_* environment variables."""

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import PostgresSettings, ServiceSettings, TokenSettings

# OWASP's minimum for argon2id: 19 MiB of memory, 2 passes, 1 lane.
MIN_HASH_MEMORY_KIB = 19 * 1024
MIN_HASH_TIME_COST = 2


class Settings(ServiceSettings, PostgresSettings, TokenSettings):
    """Everything the auth server needs; the defaults suit a local run."""

    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        9102, ge=0, le=65535, description="Prometheus /metrics port; unset disables it, 0 picks a free one."
    )
    data_dir: Path = Field(
        Path("var/auth"), description="Where a local run keeps its generated signing key when none is configured."
    )
    jwt_private_key: SecretStr | None = Field(
        None, description="Ed25519 private key (PEM) that signs access tokens; wins over the key file."
    )
    jwt_private_key_file: Path | None = Field(
        None, description="File holding the Ed25519 private key (PEM), e.g. a mounted Kubernetes secret."
    )
    jwt_extra_public_keys_file: Path | None = Field(
        None,
        description="PEM file, or directory of *.pem files, with public keys still trusted while keys rotate.",
    )
    access_token_ttl_seconds: int = Field(900, ge=30, le=86_400, description="Access token lifetime (`exp` - `iat`).")
    refresh_token_ttl_seconds: int = Field(
        30 * 86_400, ge=60, le=365 * 86_400, description="Refresh token lifetime; each use starts a new one."
    )
    hash_memory_kib: int = Field(
        MIN_HASH_MEMORY_KIB, ge=MIN_HASH_MEMORY_KIB, le=1024 * 1024, description="argon2id memory per hash, in KiB."
    )
    hash_time_cost: int = Field(MIN_HASH_TIME_COST, ge=MIN_HASH_TIME_COST, le=20, description="argon2id passes.")
    hash_parallelism: int = Field(1, ge=1, le=16, description="argon2id lanes.")
    max_concurrent_hashes: int = Field(
        4,
        ge=1,
        le=64,
        description="Password hashes computed at once; peak hashing memory is this times hash_memory_kib "
        "(4 x 19 MiB = 76 MiB by default), so size the pod's memory limit from it.",
    )
    login_window_seconds: float = Field(
        900, gt=0, le=86_400, description="Sliding window in which failed logins are counted."
    )
    login_max_failures_per_account_address: int = Field(
        5,
        ge=1,
        le=100,
        description="Failed logins for one account from one client address inside the window before that "
        "address is refused for that account (other addresses are not).",
    )
    login_max_failures_per_address: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Failed logins from one client address on any accounts inside the window before it is refused "
        "for accounts it never logged in to.",
    )
    login_max_failures_per_account_hour: int = Field(
        100,
        ge=1,
        le=100,
        description="Failed logins for one account in any hour, from all addresses together, before addresses the "
        "account never logged in from are refused (OWASP ASVS 2.2.1).",
    )
    register_window_seconds: float = Field(
        3600, gt=0, le=7 * 86_400, description="Sliding window in which registrations per client address count."
    )
    register_max_per_address: int = Field(
        10, ge=1, le=100_000, description="Registrations from one client address inside that window."
    )
    trust_forwarded_for: bool = Field(
        False,
        description="Believe the client address the gateway sends with logins and registrations instead of the gRPC "
        "peer's. Enable only where the gateway and Tagsmith's services are the sole callers (the Kubernetes "
        "network policy).",
    )

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.jwt_private_key_file is not None and not self.jwt_private_key_file.is_file():
            raise ValueError(f"TAGSMITH_JWT_PRIVATE_KEY_FILE {self.jwt_private_key_file} is not a readable file")
        extra = self.jwt_extra_public_keys_file
        if extra is not None and not extra.exists():
            raise ValueError(f"TAGSMITH_JWT_EXTRA_PUBLIC_KEYS_FILE {extra} does not exist")
        return self


class CommandSettings(BaseSettings):
    """Passwords the account commands read from the environment instead of prompting."""

    model_config = SettingsConfigDict(env_prefix="TAGSMITH_", extra="ignore", frozen=True)

    admin_password: SecretStr | None = Field(None, description="Password for `create-admin`; prompted when unset.")
    service_password: SecretStr | None = Field(
        None, description="Password for `create-service-account`; prompted when unset."
    )
