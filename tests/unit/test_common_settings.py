"""load_settings reports bad settings by name without echoing their values."""

import pytest

from services.common.settings import InvalidSettings, ServiceSettings, load_settings


def test_invalid_settings_name_the_variable_and_hide_the_value(monkeypatch):
    monkeypatch.setenv("TAGSMITH_PORT", "not-a-port-s3cret")
    with pytest.raises(InvalidSettings) as err:
        load_settings(ServiceSettings)
    assert "TAGSMITH_PORT" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_valid_settings_load(monkeypatch):
    monkeypatch.setenv("TAGSMITH_PORT", "0")
    assert load_settings(ServiceSettings).port == 0
