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
    """A directory in TF Serving's layout holding the real EfficientNet-Lite0 classifier and BlazeFace detector.

    Uses TAGSMITH_MODEL_BASE_PATH or ./models when `make model` already built them; a model missing there is built
    once into a temporary directory (beside a link to the one that exists).
    """
    candidates = [Path(c) for c in (os.environ.get("TAGSMITH_MODEL_BASE_PATH"), REPO / "models") if c]
    for candidate in candidates:
        if all(_built(candidate, name) for name in BUILDS):
            return candidate
    base = tmp_path_factory.mktemp("models")
    for name, module in BUILDS.items():
        existing = next((c / name for c in candidates if _built(c, name)), None)
        if existing is not None:
            (base / name).symlink_to(existing.resolve())
        else:
            subprocess.run([sys.executable, "-m", module, "--output", str(base / name / "1")], check=True, cwd=REPO)
    return base


# Each served model and the module that builds it.
BUILDS = {"efficientnet_lite0": "model.build", "face_detector": "model.face_detector"}


def _built(base: Path, name: str) -> bool:
    return (base / name / "1" / "saved_model.pb").exists()


@pytest.fixture(scope="session")
def test_keys() -> TestKeys:
    return TestKeys()
