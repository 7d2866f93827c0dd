"""load_settings reports bad settings by name without echoing their values; one PostgreSQL block, one pool size name."""

import pytest

from services.auth.config import Settings as AuthSettings
from services.catalog.config import Settings as CatalogSettings
from services.common.settings import InvalidSettings, ServiceSettings, load_settings


def test_invalid_settings_name_the_variable_and_hide_the_value(monkeypatch):
    monkeypatch.setenv("TAGSMITH_PORT", "not-a-port-s3cret")
    with pytest.raises(InvalidSettings) as err:
        load_settings(ServiceSettings)
    assert "TAGSMITH_PORT" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_an_override_is_named_by_its_source(monkeypatch):
    monkeypatch.setenv("TAGSMITH_GRACE_SECONDS", "-1")
    with pytest.raises(InvalidSettings) as err:
        load_settings(ServiceSettings, sources={"port": "--port"}, port=70000)
    assert set(str(err.value).splitlines()[1:]) == {
        "  TAGSMITH_GRACE_SECONDS: Input should be greater than or equal to 0",
        "  --port: Input should be less than or equal to 65535",
    }
    # An override without a named source is named by the variable it stands in for.
    with pytest.raises(InvalidSettings, match="TAGSMITH_PORT: Input should be less"):
        load_settings(ServiceSettings, port=70000)


def test_valid_settings_load(monkeypatch):
    monkeypatch.setenv("TAGSMITH_PORT", "0")
    assert load_settings(ServiceSettings).port == 0


@pytest.mark.parametrize("settings_class", [AuthSettings, CatalogSettings])
def test_postgres_services_read_one_pool_size_name(monkeypatch, settings_class):
    monkeypatch.setenv("TAGSMITH_POSTGRES_POOL_SIZE", "17")
    settings = load_settings(settings_class)
    assert settings.postgres_pool_size == 17
    assert settings.deprecations() == []


@pytest.mark.parametrize("settings_class", [AuthSettings, CatalogSettings])
def test_the_former_pool_size_name_still_works_with_a_warning(monkeypatch, settings_class):
    monkeypatch.setenv("TAGSMITH_POOL_SIZE", "7")
    settings = load_settings(settings_class)
    assert settings.postgres_pool_size == 7
    (warning,) = settings.deprecations()
    assert "TAGSMITH_POOL_SIZE is deprecated" in warning and "rename it TAGSMITH_POSTGRES_POOL_SIZE" in warning


def test_the_new_pool_size_name_wins_over_the_former(monkeypatch):
    monkeypatch.setenv("TAGSMITH_POOL_SIZE", "7")
    monkeypatch.setenv("TAGSMITH_POSTGRES_POOL_SIZE", "12")
    settings = load_settings(AuthSettings)
    assert settings.postgres_pool_size == 12
    (warning,) = settings.deprecations()
    assert "TAGSMITH_POOL_SIZE (7) is deprecated and ignored" in warning


def test_a_bad_former_pool_size_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("TAGSMITH_POOL_SIZE", "0")
    with pytest.raises(InvalidSettings, match="TAGSMITH_POOL_SIZE: Input should be greater than or equal to 1"):
        load_settings(CatalogSettings)
