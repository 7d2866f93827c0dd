"""Fixtures shared by every test tier: PostgreSQL, the built model, and access tokens."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.keys import TestKeys
from tests.support.postgres import create_database, start_cluster

pytest_plugins = [
    "tests.support.inference_fixtures",
    "tests.support.auth_fixtures",
    "tests.support.catalog_fixtures",
    "tests.support.gateway_fixtures",
]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def postgres_admin_dsn():
    dsn, handle = start_cluster()
    yield dsn
    if handle is not None:
        handle.cleanup()


@pytest.fixture
def postgres_dsn(postgres_admin_dsn) -> str:
    """A fresh, empty database for one test."""
    return create_database(postgres_admin_dsn)


@pytest.fixture(scope="session")
def model_base_path(tmp_path_factory) -> Path:
    """A directory in TF Serving's layout holding the real EfficientNet-Lite0 model.

    Uses TAGSMITH_MODEL_BASE_PATH or ./models when `make model` already built it, else builds it once.
    """
    for candidate in (os.environ.get("TAGSMITH_MODEL_BASE_PATH"), REPO / "models"):
        if candidate and (Path(candidate) / "efficientnet_lite0" / "1" / "saved_model.pb").exists():
            return Path(candidate)
    base = tmp_path_factory.mktemp("models")
    subprocess.run(
        [sys.executable, "-m", "model.build", "--output", str(base / "efficientnet_lite0" / "1")], check=True, cwd=REPO
    )
    return base


@pytest.fixture(scope="session")
def test_keys() -> TestKeys:
    return TestKeys()
