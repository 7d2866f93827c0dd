"""Auth settings: defaults, OWASP floors for hashing, client address extraction."""

import pytest
from pydantic import ValidationError

from services.auth.config import Settings
from services.auth.ratelimit import client_address


def test_defaults(monkeypatch):
    for name in ("TAGSMITH_PORT", "TAGSMITH_METRICS_PORT", "TAGSMITH_TRUST_FORWARDED_FOR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.port, settings.metrics_port) == (50052, 9102)
    assert (settings.hash_memory_kib, settings.hash_time_cost, settings.hash_parallelism) == (19456, 2, 1)
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_token_ttl_seconds == 30 * 86400
    assert settings.max_concurrent_hashes == 4
    assert not settings.trust_forwarded_for
    assert (settings.login_max_failures_per_account_address, settings.login_max_failures_per_account_hour) == (5, 100)
    assert (settings.register_max_per_address, settings.register_window_seconds) == (10, 3600)


@pytest.mark.parametrize(
    "values",
    [
        {"hash_memory_kib": 19455},
        {"hash_time_cost": 1},
        {"login_max_failures_per_account_address": 101},
        {"register_max_per_address": 0},
        {"login_max_failures_per_account_hour": 101},
        {"max_concurrent_hashes": 0},
        {"access_token_ttl_seconds": 0},
    ],
)
def test_unsafe_values_fail_fast(values):
    with pytest.raises(ValidationError):
        Settings(**values)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("TAGSMITH_LOGIN_WINDOW_SECONDS", "2.5")
    monkeypatch.setenv("TAGSMITH_TRUST_FORWARDED_FOR", "true")
    settings = Settings()
    assert settings.login_window_seconds == 2.5
    assert settings.trust_forwarded_for


@pytest.mark.parametrize(
    ("peer", "forwarded", "trust", "expected"),
    [
        ("ipv4:10.1.2.3:5123", None, False, "10.1.2.3"),
        ("ipv4:10.1.2.3:5123", "203.0.113.9", False, "10.1.2.3"),
        ("ipv4:10.1.2.3:5123", "203.0.113.9", True, "203.0.113.9"),
        ("ipv4:10.1.2.3:5123", "198.51.100.1, 203.0.113.9", True, "203.0.113.9"),
        ("ipv4:10.1.2.3:5123", "not-an-ip", True, "10.1.2.3"),
        ("ipv6:%5B2001:db8:1:2:3:4:5:6%5D:5123", None, False, "2001:db8:1:2::/64"),
        ("ipv6:[::ffff:192.0.2.7]:5123", None, False, "192.0.2.7"),
        ("unix:/tmp/socket", None, False, "unix:/tmp/socket"),
    ],
)
def test_client_address(peer, forwarded, trust, expected):
    assert client_address(peer, forwarded, trust_claimed=trust) == expected
