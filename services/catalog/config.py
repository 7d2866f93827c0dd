"""Catalog settings, read from TAGSMITH_* environment variables."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from services.catalog.models import UNLIMITED, Quota
from services.common.settings import PostgresSettings, ServiceSettings, TokenSettings

MIB = 1024 * 1024


class Settings(ServiceSettings, PostgresSettings, TokenSettings):
    """Everything the catalog server, its worker, its sweeper and its commands need."""

    port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        9103, ge=0, le=65535, description="Prometheus /metrics port; unset disables it, 0 picks a free one."
    )

    inference_addr: str = Field("127.0.0.1:50054", description="Inference service address; 'a:1,b:2' round-robins.")
    inference_timeout_seconds: float = Field(
        5.0, gt=0, le=120, description="How long an upload waits for classification before it is stored as pending."
    )

    max_upload_bytes: int = Field(25 * MIB, ge=1, description="Largest accepted image, checked while streaming.")
    max_pixels: int = Field(50_000_000, ge=1, description="Largest accepted width x height, read from the header.")

    quota_bytes: int = Field(10 * 1024 * MIB, ge=0, description="Bytes of images one user may store; 0 means no limit.")
    quota_images: int = Field(100_000, ge=0, description="Images one user may store; 0 means no limit.")

    blob_driver: Literal["local", "s3"] = Field("local", description="Where image bytes live: a directory or S3.")
    blob_dir: Path = Field(Path("var/blobs"), description="Root directory of the local driver.")
    s3_endpoint: str = Field("", description="S3 endpoint host:port, e.g. 127.0.0.1:9000 (s3 driver).")
    s3_access_key: str = Field("", description="S3 access key (s3 driver).")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key (s3 driver).")
    s3_bucket: str = Field("tagsmith-images", description="Bucket for images and thumbnails; created when missing.")
    s3_secure: bool = Field(False, description="Use HTTPS for the S3 endpoint.")
    s3_region: str = Field("", description="S3 region; empty lets the SDK discover it.")

    worker_enabled: bool = Field(True, description="Run the pending-classification worker in this process.")
    worker_poll_seconds: float = Field(2.0, gt=0, description="Pause between polls when nothing is pending.")
    worker_batch_size: int = Field(8, ge=1, le=100, description="Pending images one worker claims at a time.")
    worker_max_attempts: int = Field(5, ge=1, description="Failed classifications before an image is marked failed.")
    worker_retry_seconds: float = Field(
        30.0, gt=0, description="First pause before retrying an image whose classification failed; doubles per attempt."
    )
    worker_max_backoff_seconds: float = Field(60.0, gt=0, description="Longest pause while inference is down.")
    worker_lease_seconds: float = Field(
        120.0, gt=0, description="How long a claimed image stays reserved before another replica may retry it."
    )

    sweeper_enabled: bool = Field(True, description="Run the orphan sweeper in this process.")
    sweep_interval_seconds: float = Field(600.0, gt=0, description="Pause between sweeps.")
    sweep_grace_seconds: float = Field(
        3600.0, ge=0, description="Age after which bytes without a row, and unfinished uploads, are removed."
    )

    trash_retention_days: int = Field(
        30, ge=1, le=3650, description="Days a deleted image stays restorable in the trash before it is purged."
    )

    reclassify_batch_size: int = Field(100, ge=1, le=1000, description="Images per reclassification batch.")
    reclassify_concurrency: int = Field(4, ge=1, le=64, description="Classifications in flight during a batch.")
    retag_enabled: bool = Field(
        True, description="Re-tag images from their stored labels in the background after a vocabulary change."
    )
    retag_batch_size: int = Field(500, ge=1, le=10000, description="Images per re-tagging batch.")

    service_username: str = Field("", description="Service account the worker and commands log in as.")
    service_password: SecretStr = Field(SecretStr(""), description="That service account's password.")

    @property
    def quota(self) -> Quota:
        return Quota(bytes=self.quota_bytes or UNLIMITED, images=self.quota_images or UNLIMITED)

    @model_validator(mode="after")
    def _check_s3(self) -> "Settings":
        if self.blob_driver == "s3":
            missing = [
                name
                for name, value in (
                    ("TAGSMITH_S3_ENDPOINT", self.s3_endpoint),
                    ("TAGSMITH_S3_ACCESS_KEY", self.s3_access_key),
                    ("TAGSMITH_S3_SECRET_KEY", self.s3_secret_key.get_secret_value()),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"the s3 blob driver needs {', '.join(missing)}")
        if bool(self.service_username) != bool(self.service_password.get_secret_value()):
            raise ValueError("set both TAGSMITH_SERVICE_USERNAME and TAGSMITH_SERVICE_PASSWORD, or neither")
        return self

    @property
    def trash_retention_seconds(self) -> float:
        return self.trash_retention_days * 86400.0
