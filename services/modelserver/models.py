"""Finds SavedModels in TF Serving's layout, loads each version once, and resolves a ModelSpec to one of them."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from services.common.errors import StatusError
from services.modelserver import warmup
from services.modelserver.config import Settings

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
# Signatures TF2 adds for its own bookkeeping; present in metadata, never callable through Predict.
INTERNAL_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class ModelSource:
    """Where one model's versions live and which of them to serve."""

    name: str
    base_path: Path
    policy: str = "latest"  # "latest", "all" or "specific"
    num_latest: int = 1
    specific: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)


class Signature:
    """One callable signature: its declared inputs and outputs and the concrete function behind it."""

    def __init__(self, name: str, function, signature_def: meta_graph_pb2.SignatureDef) -> None:
        self.name = name
        self._function = function
        self.inputs: dict[str, tf.TensorSpec] = function.structured_input_signature[1]
        self.outputs = tuple(sorted(signature_def.outputs))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {key: tf.constant(value, dtype=self.inputs[key].dtype) for key, value in inputs.items()}
        results = self._function(**tensors)
        return {key: tensor.numpy() for key, tensor in results.items()}


@dataclass
class Servable:
    """One loaded model version."""

    name: str
    version: int
    path: Path
    signatures: dict[str, Signature]
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    # The loaded SavedModel object: keeps its variables alive as long as the servable.
    module: object = field(default=None, repr=False)
    warmup_requests: int = 0  # how many requests of the SavedModel's warm-up file ran at load

    def signature(self, name: str) -> Signature:
        try:
            return self.signatures[name or DEFAULT_SIGNATURE]
        except KeyError:
            raise StatusError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
            ) from None


def version_dirs(base_path: Path) -> dict[int, Path]:
    """Numeric subdirectories holding a saved_model.pb; half-written builds (".1.building-x") never match."""
    if not base_path.is_dir():
        return {}
    return {
        int(child.name): child
        for child in base_path.iterdir()
        if child.name.isdigit() and (child / "saved_model.pb").is_file()
    }


def select_versions(source: ModelSource, available: dict[int, Path]) -> list[int]:
    if source.policy == "all":
        return sorted(available)
    if source.policy == "specific":
        missing = set(source.specific) - set(available)
        if missing:
            raise ValueError(f"model {source.name}: versions {sorted(missing)} not found under {source.base_path}")
        return sorted(source.specific)
    return sorted(available)[-source.num_latest :]


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved_model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path} has no MetaGraph tagged '{SERVE_TAG}'")


def load_servable(name: str, version: int, path: Path, *, run_warmup: bool = True) -> Servable:
    """Loads one version and, unless told not to, runs its warm-up requests (a failing one fails the load)."""
    loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    signature_defs = read_signature_defs(path)
    signatures = {
        key: Signature(key, function, signature_defs[key])
        for key, function in loaded.signatures.items()
        if key != INTERNAL_SIGNATURE
    }
    servable = Servable(name, version, path, signatures, signature_defs, module=loaded)
    if run_warmup:
        try:
            servable.warmup_requests = warmup.warm_up(path, signatures)
        except ValueError as exc:
            raise ValueError(f"model {name} version {version} failed its warm-up: {exc}") from None
    log.info("loaded model %s version %d from %s", name, version, path)
    return servable


def sources_from_config(path: Path) -> list[ModelSource]:
    """The models of a text-format ModelServerConfig; relative base paths are relative to the file."""
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    sources = []
    for entry in config.model_config_list.config:
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {entry.name}: platform {entry.model_platform!r} is not supported")
        policy = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        base_path = Path(entry.base_path)
        sources.append(
            ModelSource(
                name=entry.name,
                base_path=base_path if base_path.is_absolute() else path.parent / base_path,
                policy=policy,
                num_latest=entry.model_version_policy.latest.num_versions or 1,
                specific=tuple(entry.model_version_policy.specific.versions),
                labels=dict(entry.version_labels),
            )
        )
    return sources


def sources_from_base_path(base_path: Path, model_name: str) -> list[ModelSource]:
    """One model when base_path holds numeric versions, else one model per subdirectory that does."""
    if version_dirs(base_path):
        return [ModelSource(name=model_name, base_path=base_path)]
    if not base_path.is_dir():
        raise ValueError(f"model base path {base_path} is not a directory")
    return [
        ModelSource(name=child.name, base_path=child)
        for child in sorted(base_path.iterdir())
        if child.is_dir() and version_dirs(child)
    ]


def configured_sources(settings: Settings) -> list[ModelSource]:
    if settings.model_config_file is not None:
        sources = sources_from_config(settings.model_config_file)
    else:
        sources = sources_from_base_path(settings.model_base_path, settings.model_name)
    if not sources:
        where = settings.model_config_file or settings.model_base_path
        raise ValueError(f"no models found in {where} (expected <name>/<version>/saved_model.pb)")
    return sources


class ModelRepository:
    """Every served version of every model, loaded once at start-up."""

    def __init__(self, sources: list[ModelSource], servables: dict[str, dict[int, Servable]]) -> None:
        self._sources = {source.name: source for source in sources}
        self._servables = servables

    @classmethod
    def load(cls, sources: list[ModelSource], *, run_warmup: bool = True) -> "ModelRepository":
        servables: dict[str, dict[int, Servable]] = {}
        for source in sources:
            available = version_dirs(source.base_path)
            chosen = select_versions(source, available)
            if not chosen:
                raise ValueError(f"model {source.name}: no version found under {source.base_path}")
            servables[source.name] = {
                v: load_servable(source.name, v, available[v], run_warmup=run_warmup) for v in chosen
            }
            unknown = {label: v for label, v in source.labels.items() if v not in servables[source.name]}
            if unknown:
                raise ValueError(f"model {source.name}: version labels point at versions not served: {unknown}")
        return cls(sources, servables)

    def servables(self) -> list[Servable]:
        return [s for versions in self._servables.values() for s in versions.values()]

    def versions(self, name: str) -> dict[int, Servable]:
        if name not in self._servables:
            raise StatusError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return self._servables[name]

    def resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        """The servable a ModelSpec names: its version, its version label, or else the highest version."""
        versions = self.versions(spec.name)
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            label = spec.version_label
            if label not in self._sources[spec.name].labels:
                raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
            return versions[self._sources[spec.name].labels[label]]
        if choice == "version":
            version = spec.version.value
            if version not in versions:
                raise StatusError(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({spec.name}, {version})"
                )
            return versions[version]
        return versions[max(versions)]
