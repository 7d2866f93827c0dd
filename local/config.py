"""Launcher settings for `make run`, read from TAGSMITH_* environment variables."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class LocalSettings(BaseSettings):
    """Where the data lives, which ports to use, and what to pass on to the services.

    Every port may be 0 (any free port); a second copy runs beside the first with other ports and its own data_dir.
    """

    model_config = SettingsConfigDict(env_prefix="TAGSMITH_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("var"), description="PostgreSQL data, blobs, the auth key and generated secrets.")
    model_base_path: Path = Field(Path("models"), description="Models in TF Serving's layout (`make model`).")
    postgres_dsn: str = Field(
        "",
        description="Use this PostgreSQL (its port is part of the DSN) instead of the embedded one, which listens on "
        "a Unix socket in data_dir and on no TCP port.",
    )
    host: str = Field("127.0.0.1", description="Interface every service binds to.")
    gateway_port: int = Field(8080, ge=0, le=65535, description="HTTP port of the gateway (the page and the API).")
    auth_port: int = Field(50052, ge=0, le=65535, description="gRPC port of auth.")
    catalog_port: int = Field(50053, ge=0, le=65535, description="gRPC port of the catalog.")
    inference_port: int = Field(50054, ge=0, le=65535, description="gRPC port of inference.")
    modelserver_port: int = Field(8500, ge=0, le=65535, description="gRPC port of the model server.")
    auth_metrics_port: int = Field(9102, ge=0, le=65535, description="Prometheus /metrics port of auth.")
    catalog_metrics_port: int = Field(9103, ge=0, le=65535, description="Prometheus /metrics port of the catalog.")
    inference_metrics_port: int = Field(9104, ge=0, le=65535, description="Prometheus /metrics port of inference.")
    modelserver_metrics_port: int = Field(
        9105, ge=0, le=65535, description="Prometheus /metrics port of the model server."
    )
    blob_driver: Literal["local", "s3"] = Field("local", description="local keeps images under data_dir/blobs.")
    s3_endpoint: str = Field("", description="S3/MinIO endpoint host:port for the s3 driver.")
    s3_access_key: str = Field("", description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_bucket: str = Field("tagsmith-images", description="S3 bucket.")
    s3_secure: bool = Field(False, description="HTTPS to the S3 endpoint.")
    anonymous_mode: bool = Field(False, description="Let the original API work without tokens.")
    log_format: Literal["json", "text"] = Field("text", description="Log format of every service.")
    log_level: str = Field("INFO", description="Log level of every service.")
    start_timeout_seconds: float = Field(180.0, gt=0, description="How long the services may take to become ready.")
    grace_seconds: float = Field(10.0, ge=0, description="On Ctrl-C, how long services may finish in-flight work.")
