"""Session fixtures: the classifier SavedModel every tier uses (`make model`'s, TAGSMITH_MODEL_DIR, or one build)."""

import os
from pathlib import Path

import pytest
import tensorflow as tf

from model import build


@pytest.fixture(scope="session")
def model_dir(model_base_path) -> Path:
    existing = os.environ.get("TAGSMITH_MODEL_DIR")
    if existing and (Path(existing) / "saved_model.pb").is_file():
        return Path(existing)
    # The build the other tiers serve: built once per session at most (see model_base_path), so its own tests here
    # check the very model the services use.
    return model_base_path / build.MODEL_NAME / build.MODEL_VERSION


@pytest.fixture(scope="session")
def loaded(model_dir):
    return tf.saved_model.load(str(model_dir))


@pytest.fixture(scope="session")
def serve(loaded):
    return loaded.signatures["serving_default"]


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return build.read_labels(build.LABELS_PATH)


@pytest.fixture(scope="session")
def weights():
    return build.load_weights()
