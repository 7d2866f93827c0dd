"""The manifests set what each service's Settings need, nothing they ignore, and addresses that lead somewhere."""

import importlib
import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from pydantic_settings import BaseSettings

from tests.deploy.manifests import (
    NAMESPACE,
    OVERLAYS,
    REPO,
    SERVICES,
    Workload,
    env_values,
    find,
    image_service,
    render_overlay,
    resolve_port,
    served_base_paths,
    service_containers,
    workloads,
)

CLUSTER_ADDRESS = re.compile(
    r"^dns:///(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc\.cluster\.local:(?P<port>\d+)$"
)
# Settings that must differ from their local-run defaults in a cluster, beyond host, port, *_addr and *_dsn.
CLUSTER_REQUIRED = {
    "auth": {"jwt_private_key_file"},
    "catalog": {"blob_driver", "s3_endpoint", "s3_access_key", "s3_secret_key", "service_username", "service_password"},
    "inference": set(),
    "gateway": set(),
}
# Inherited fields a service does not use: auth verifies its own tokens without calling itself.
UNUSED = {"auth": {"auth_addr"}}
PLACEHOLDER_SECRET = "placeholder-secret-value-0123456789"


def settings_classes(service: str) -> list[type[BaseSettings]]:
    """Every settings class services/<service>/config.py defines (the server's, and any command's)."""
    module = importlib.import_module(f"services.{service}.config")
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__
    ]


def env_name(cls: type[BaseSettings], field: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def known_env(service: str) -> set[str]:
    return {env_name(cls, field) for cls in settings_classes(service) for field in cls.model_fields}


def serving_deployments(overlay: str) -> list[tuple[Workload, dict, str]]:
    return [(w, c, s) for w, c, s in service_containers(render_overlay(overlay)) if w.kind == "Deployment"]


@pytest.fixture
def load_settings(monkeypatch, tmp_path):
    """Builds a service's Settings from a container's env, as the pod would: Secrets become placeholders,
    files on mounted volumes become real (empty) files."""

    def load(workload: Workload, container: dict, cls: type[BaseSettings] | None = None) -> BaseSettings:
        cls = cls or importlib.import_module(f"services.{image_service(container['image'])}.config").Settings
        for name in [n for n in os.environ if n.startswith("TAGSMITH_")]:
            monkeypatch.delenv(name)
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for name, value in env_values(container).items():
            if value is None:
                value = PLACEHOLDER_SECRET
            elif any(value.startswith(mount + "/") for mount in mounts):
                value = str(tmp_path / value.rsplit("/", 1)[1])
                open(value, "w").close()
            monkeypatch.setenv(name, value)
        return cls()

    return load


def test_every_service_is_deployed_and_has_settings():
    deployed = {service for _, _, service in serving_deployments("small")}
    assert deployed == set(SERVICES)
    for service in SERVICES:
        assert settings_classes(service), f"services/{service}/config.py defines its Settings"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_sets_a_setting_its_service_ignores(overlay):
    for workload, container, service in service_containers(render_overlay(overlay)):
        ignored = {n for n in env_values(container) if n.startswith("TAGSMITH_")} - known_env(service)
        assert not ignored, f"{workload.kind}/{workload.name}: {service} has no setting {sorted(ignored)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_sets_what_its_service_requires(overlay):
    for workload, container, service in serving_deployments(overlay):
        cls = importlib.import_module(f"services.{service}.config").Settings
        fields = cls.model_fields
        required = {"host", "port", *CLUSTER_REQUIRED[service]}
        required |= {name for name, field in fields.items() if field.is_required() or name.endswith(("_addr", "_dsn"))}
        required -= UNUSED.get(service, set())
        missing = {env_name(cls, name) for name in required} - env_values(container).keys()
        assert not missing, f"{overlay}: {workload.name} must set {sorted(missing)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_container_loads_its_settings(overlay, load_settings):
    """The values pass the services' own validation, Jobs included (migrate and account commands read them too)."""
    for workload, container, service in service_containers(render_overlay(overlay)):
        for cls in settings_classes(service):
            load_settings(workload, container, cls)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes_agree_with_settings(overlay, load_settings):
    for workload, container, _ in serving_deployments(overlay):
        settings = load_settings(workload, container)
        ports = workload.container_ports()
        where = f"{overlay}: {workload.name}"
        assert settings.host == "0.0.0.0", f"{where} listens on every interface of the pod"
        assert settings.port == ports.get("grpc", ports.get("http")), where
        if "metrics" in ports:
            assert settings.metrics_port == ports["metrics"], where
            assert workload.annotations["prometheus.io/port"] == str(settings.metrics_port), where
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container[kind]
            handler = probe.get("grpc") or probe.get("httpGet")
            assert resolve_port(handler["port"], ports) == settings.port, f"{where} {kind}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_readiness_probes_ask_for_the_services_own_health(overlay):
    for workload, container, service in serving_deployments(overlay):
        probe = container["readinessProbe"]
        if "grpc" in probe:
            pb2 = importlib.import_module(f"tagsmith.{service}.v1.{service}_pb2")
            names = {s.full_name for s in pb2.DESCRIPTOR.services_by_name.values()}
            assert probe["grpc"]["service"] in names, workload.name
        else:
            from services.gateway.app import create_app
            from services.gateway.config import Settings

            paths = create_app(Settings()).openapi()["paths"]
            assert probe["httpGet"]["path"] in paths
            assert container["livenessProbe"]["httpGet"]["path"] in paths


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_the_services_grace(overlay, load_settings):
    for workload, container, _ in serving_deployments(overlay):
        settings = load_settings(workload, container)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert settings.grace_seconds + pre_stop < workload.pod["terminationGracePeriodSeconds"], workload.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_addresses_lead_to_the_right_pods(overlay, load_settings):
    docs = render_overlay(overlay)
    for workload, container, _ in serving_deployments(overlay):
        for name, value in env_values(container).items():
            if name.endswith("_ADDR"):
                match = CLUSTER_ADDRESS.match(value or "")
                assert match, f"{workload.name} {name}={value} is a dns:/// cluster address"
                assert match["namespace"] == NAMESPACE
                backend = _backend(docs, match["service"], int(match["port"]), headless=True)
                _assert_backend_listens(backend, int(match["port"]), load_settings)


def _backend(docs: tuple[dict, ...], service_name: str, port: int, *, headless: bool) -> tuple[Workload, int]:
    """The workload behind a Service port, and the container port it forwards to."""
    service = find(docs, "Service", service_name)
    if headless:
        assert service["spec"].get("clusterIP") == "None", f"{service_name} is headless for client-side balancing"
    (entry,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    selector = service["spec"]["selector"].items()
    (backend,) = [w for w in workloads(docs) if w.kind != "Job" and selector <= w.labels.items()]
    return backend, resolve_port(entry.get("targetPort", port), backend.container_ports())


def _assert_backend_listens(backend: tuple[Workload, int], port: int, load_settings) -> None:
    workload, target = backend
    assert target == port, f"{workload.name}: clients dial the pod's own port {target}"
    container = workload.pod["containers"][0]
    if image_service(container["image"]):
        settings = load_settings(workload, container)
        assert settings.port == port, f"{workload.name} listens on {settings.port}, clients dial {port}"
    else:
        assert f"--port={port}" in container.get("args", []), f"{workload.name} serves gRPC on {port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_catalog_finds_its_database_bucket_and_account(overlay, load_settings):
    docs = render_overlay(overlay)
    workload = next(w for w in workloads(docs) if w.name == "catalog")
    settings = load_settings(workload, workload.pod["containers"][0])
    host, _, port = settings.s3_endpoint.partition(":")
    assert host == f"minio.{NAMESPACE}.svc.cluster.local"
    assert _backend(docs, "minio", int(port), headless=False)[1] == int(port)
    bucket_job = find(docs, "Job", "minio-bucket")["spec"]["template"]["spec"]["containers"][0]
    assert env_values(bucket_job)["BUCKET"] == settings.s3_bucket
    assert urlsplit(env_values(bucket_job)["MINIO_URL"]).netloc == settings.s3_endpoint
    volumes = find(docs, "Job", "minio-bucket")["spec"]["template"]["spec"]["volumes"]
    policy_map = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    policy = find(docs, "ConfigMap", policy_map)["data"]["catalog-policy.json"]
    assert f"arn:aws:s3:::{settings.s3_bucket}/*" in policy
    account_job = find(docs, "Job", "catalog-service-account")["spec"]["template"]["spec"]["containers"][0]
    assert account_job["args"] == ["create-service-account", settings.service_username]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_database_users_reach_postgres(overlay):
    docs = render_overlay(overlay)
    postgres = find(docs, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    database = env_values(postgres)
    for workload, container, _ in service_containers(docs):
        dsn = env_values(container).get("TAGSMITH_POSTGRES_DSN")
        if dsn is None:
            continue
        url = urlsplit(dsn)
        assert url.hostname == f"postgres.{NAMESPACE}.svc.cluster.local", workload.name
        assert _backend(docs, "postgres", url.port, headless=True)[1] == url.port
        assert (url.username, url.path.lstrip("/")) == (database["POSTGRES_USER"], database["POSTGRES_DB"])
        assert url.password is None, f"{workload.name}: the password comes from the Secret, not the manifest"
        assert "PGPASSWORD" in env_values(container), workload.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_admits_the_largest_upload_the_gateway_accepts(overlay, load_settings):
    docs = render_overlay(overlay)
    gateway = next(w for w in workloads(docs) if w.name == "gateway")
    settings = load_settings(gateway, gateway.pod["containers"][0])
    limit = find(docs, "Ingress", "gateway")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert limit.endswith("m") and int(limit[:-1]) * 1024 * 1024 >= settings.max_request_bytes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_asks_tfserving_for_its_model_in_batches_it_accepts(overlay, load_settings):
    docs = render_overlay(overlay)
    inference = next(w for w in workloads(docs) if w.name == "inference")
    settings = load_settings(inference, inference.pod["containers"][0])
    tfserving = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    base_paths = served_base_paths(docs, tfserving)
    assert base_paths[settings.model_name].endswith(f"/{settings.model_name}")
    assert base_paths[settings.face_model_name].endswith(f"/{settings.face_model_name}")
    config_map = next(v["configMap"]["name"] for v in tfserving["volumes"] if "configMap" in v)
    batching = find(docs, "ConfigMap", config_map)["data"]["batching.config"]
    max_batch = int(re.search(r"max_batch_size \{ value: (\d+) \}", batching).group(1))
    assert settings.batch_max_size <= max_batch, "TF Serving rejects a Predict call larger than its max_batch_size"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_upload_limits_agree_along_the_way(overlay, load_settings):
    """A file the gateway accepts is not refused further in: catalog, then inference."""
    by_name = {w.name: w for w in workloads(render_overlay(overlay))}
    gateway, catalog, inference = (
        load_settings(by_name[name], by_name[name].pod["containers"][0]) for name in ("gateway", "catalog", "inference")
    )
    assert gateway.max_upload_bytes <= catalog.max_upload_bytes <= inference.max_bytes
    assert catalog.max_pixels <= inference.max_pixels


def test_jobs_run_commands_their_service_has():
    for workload, container, service in service_containers(render_overlay("small")):
        if workload.kind != "Job":
            continue
        usage = subprocess.run(
            [sys.executable, "-m", f"services.{service}", "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": f"{REPO / 'gen'}{os.pathsep}{REPO}"},
            timeout=60,
        )
        assert usage.returncode == 0, usage.stderr
        commands = re.search(r"\{([\w,-]+)\}", usage.stdout).group(1).split(",")
        assert container["args"][0] in commands, f"{workload.name}: {service} has no command {container['args'][0]}"
