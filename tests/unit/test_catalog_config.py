"""Catalog settings fail fast on incomplete configurations."""

import pytest
from pydantic import ValidationError

from services.catalog.config import Settings


def test_defaults_are_usable_for_local_runs():
    settings = Settings(_env_file=None)
    assert settings.port == 50053
    assert settings.blob_driver == "local"
    assert settings.max_upload_bytes == 25 * 1024 * 1024


def test_s3_driver_needs_endpoint_and_keys():
    with pytest.raises(ValidationError, match="TAGSMITH_S3_ENDPOINT, TAGSMITH_S3_ACCESS_KEY, TAGSMITH_S3_SECRET_KEY"):
        Settings(blob_driver="s3")
    assert Settings(blob_driver="s3", s3_endpoint="h:9000", s3_access_key="a", s3_secret_key="b").s3_bucket


def test_service_account_needs_both_halves():
    with pytest.raises(ValidationError, match="TAGSMITH_SERVICE_PASSWORD"):
        Settings(service_username="catalog")


@pytest.mark.parametrize("field", ["max_upload_bytes", "inference_timeout_seconds", "worker_batch_size"])
def test_nonsense_numbers_are_refused(field):
    with pytest.raises(ValidationError):
        Settings(**{field: 0})
