"""Finding models in TF Serving's layout, choosing versions, and resolving a ModelSpec."""

from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import model_pb2

from services.common.errors import StatusError
from services.modelserver.config import load_settings
from services.modelserver.models import (
    ModelRepository,
    ModelSource,
    configured_sources,
    select_versions,
    version_dirs,
)


def make_versions(base: Path, *versions: str) -> Path:
    for version in versions:
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"")
    return base


def test_only_complete_numeric_versions_count(tmp_path):
    make_versions(tmp_path, "1", "10", ".2.building-x")
    (tmp_path / "3").mkdir()
    assert sorted(version_dirs(tmp_path)) == [1, 10]


def test_base_path_of_one_model_or_of_several(tmp_path):
    single = make_versions(tmp_path / "single", "1")
    sources = configured_sources(load_settings([f"--model_base_path={single}", "--model_name=m"]))
    assert [(s.name, s.base_path) for s in sources] == [("m", single)]
    make_versions(tmp_path / "many" / "a", "1")
    make_versions(tmp_path / "many" / "b", "2")
    sources = configured_sources(load_settings([f"--model_base_path={tmp_path / 'many'}"]))
    assert [s.name for s in sources] == ["a", "b"]
    with pytest.raises(ValueError, match="no models"):
        configured_sources(load_settings([f"--model_base_path={tmp_path / 'many' / 'a' / '1'}"]))


def test_config_file_policies_and_labels(tmp_path):
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "m" base_path: "m" model_platform: "tensorflow" '
        "model_version_policy { specific { versions: 1 versions: 3 } } "
        'version_labels { key: "stable" value: 1 } } }'
    )
    [source] = configured_sources(load_settings([f"--model_config_file={tmp_path / 'models.config'}"]))
    assert (source.base_path, source.policy, source.specific, source.labels) == (
        tmp_path / "m",
        "specific",
        (1, 3),
        {"stable": 1},
    )


def test_version_policies():
    available = {1: Path("1"), 2: Path("2"), 5: Path("5")}
    assert select_versions(ModelSource("m", Path()), available) == [5]
    assert select_versions(ModelSource("m", Path(), num_latest=2), available) == [2, 5]
    assert select_versions(ModelSource("m", Path(), policy="all"), available) == [1, 2, 5]
    with pytest.raises(ValueError, match="versions"):
        select_versions(ModelSource("m", Path(), policy="specific", specific=(3,)), available)


def test_resolve_like_tf_serving():
    sources = [ModelSource("m", Path(), labels={"stable": 1})]
    repository = ModelRepository(sources, {"m": {1: "v1", 2: "v2"}})
    assert repository.resolve(model_pb2.ModelSpec(name="m")) == "v2"
    spec = model_pb2.ModelSpec(name="m")
    spec.version.value = 1
    assert repository.resolve(spec) == "v1"
    assert repository.resolve(model_pb2.ModelSpec(name="m", version_label="stable")) == "v1"
    for bad, code in (
        (model_pb2.ModelSpec(name="x"), grpc.StatusCode.NOT_FOUND),
        (model_pb2.ModelSpec(name="m", version_label="canary"), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(StatusError) as err:
            repository.resolve(bad)
        assert err.value.code == code
    spec.version.value = 9
    with pytest.raises(StatusError, match=r"Specific\(m, 9\)"):
        repository.resolve(spec)
