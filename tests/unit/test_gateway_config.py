"""Gateway settings: defaults, parsing and refusing unsafe combinations."""

import pytest
from pydantic import ValidationError

from services.gateway.config import Settings


def test_defaults_match_the_documented_ports():
    settings = Settings()
    assert (settings.port, settings.auth_addr, settings.catalog_addr) == (8080, "127.0.0.1:50052", "127.0.0.1:50053")
    assert settings.anonymous_mode is False
    assert settings.max_request_bytes > settings.max_upload_bytes


def test_cors_origins_are_comma_separated(monkeypatch):
    monkeypatch.setenv("TAGSMITH_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]


def test_anonymous_mode_needs_a_password():
    with pytest.raises(ValidationError, match="ANONYMOUS_PASSWORD"):
        Settings(anonymous_mode=True)
    assert Settings(anonymous_mode=True, anonymous_password="x" * 12).anonymous_mode


def test_bad_values_fail_fast():
    with pytest.raises(ValidationError):
        Settings(backend_timeout_seconds=0)
    with pytest.raises(ValidationError):
        Settings(max_files_per_request=0)
