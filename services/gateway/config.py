"""Gateway settings, read from TAGSMITH_* environment variables."""

from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from services.common.settings import ServiceSettings, TokenSettings

MiB = 1024 * 1024


class Settings(ServiceSettings, TokenSettings):
    """Where the backends are, how long to wait for them, and what the HTTP side accepts."""

    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    metrics_port: int | None = Field(None, description="Unused: the gateway serves /metrics on its HTTP port.")
    catalog_addr: str = Field("127.0.0.1:50053", description="Catalog gRPC address; 'a:1,b:2' spreads calls.")
    inference_addr: str = Field("127.0.0.1:50054", description="Inference gRPC address; 'a:1,b:2' spreads calls.")
    backend_timeout_seconds: float = Field(10.0, gt=0, description="Deadline of every unary backend call.")
    transfer_timeout_seconds: float = Field(
        120.0, gt=0, description="Deadline of an upload or download stream, which moves the whole file."
    )
    max_upload_bytes: int = Field(25 * MiB, gt=0, description="Largest file accepted; larger ones get 413.")
    max_files_per_request: int = Field(20, ge=1, le=1000, description="Most files one POST /v1/images may carry.")
    header_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Time a client has to send its request line and headers; then 408 and close."
    )
    body_timeout_seconds: float = Field(
        20.0, gt=0, le=600, description="Longest pause in a request body; the allowance grows with the bytes received."
    )
    body_min_rate_bytes: int = Field(
        500, ge=1, description="Bytes of body that earn one more second of body_timeout (mod_reqtimeout's MinRate)."
    )
    keep_alive_timeout_seconds: int = Field(
        75, ge=1, le=3600, description="Idle time before a keep-alive connection closes; above proxies' 60 s."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty disables CORS."
    )
    trusted_proxies: str = Field(
        "", description="Comma-separated proxy addresses whose X-Forwarded-For is believed ('*' for any)."
    )
    anonymous_mode: bool = Field(False, description="Let the original API work without tokens, as one shared user.")
    anonymous_username: str = Field("anonymous", description="The shared user of anonymous mode.")
    anonymous_password: SecretStr = Field(SecretStr(""), description="Its password; required in anonymous mode.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _anonymous_needs_password(self) -> "Settings":
        if self.anonymous_mode and not self.anonymous_password.get_secret_value():
            raise ValueError("TAGSMITH_ANONYMOUS_MODE needs TAGSMITH_ANONYMOUS_PASSWORD")
        return self

    @property
    def max_request_bytes(self) -> int:
        """Largest Content-Length a multi-file upload may announce: every file at the limit, plus framing."""
        return self.max_upload_bytes * self.max_files_per_request + MiB
