"""Session fixtures: one SavedModel build (or TAGSMITH_MODEL_DIR) shared by all model tests."""

import os
from pathlib import Path

import pytest
import tensorflow as tf

from model import build


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    existing = os.environ.get("TAGSMITH_MODEL_DIR")
    if existing and (Path(existing) / "saved_model.pb").is_file():
        return Path(existing)
    output = tmp_path_factory.mktemp("models") / build.MODEL_NAME / build.MODEL_VERSION
    build.save(output)
    return output


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
