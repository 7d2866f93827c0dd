"""Every overlay renders, validates against current Kubernetes schemas, and meets the security baseline."""

import re

import kubernetes_validate
import pytest

from services.inference.config import Settings as InferenceSettings
from tests.deploy.manifests import (
    DEPLOYMENT_GUIDE,
    K8S,
    NAMESPACE,
    OVERLAYS,
    find,
    render,
    render_overlay,
    served_base_paths,
    workloads,
)

# Volume types the Pod Security "restricted" profile admits.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
EXPLICIT_TAG = re.compile(r"^[^@]+:(?!latest$)[\w][\w.-]{0,127}(@sha256:[0-9a-f]{64})?$")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_newest_schemas_strictly(overlay):
    version = kubernetes_validate.latest_version()
    docs = render_overlay(overlay)
    assert len(docs) > 30
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} in {overlay}: {exc.message} at {list(exc.path)}")


def test_strict_validation_rejects_unknown_fields():
    """Guards the check above: a misspelt field must fail, not pass silently."""
    doc = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}, "automountToken": False}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kubectl_apply_k_deploy_k8s_is_the_small_overlay():
    assert render(K8S) == render_overlay("small")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_component_is_there(overlay):
    docs = render_overlay(overlay)
    for name in ("gateway", "auth", "catalog", "inference", "tfserving"):
        find(docs, "Deployment", name)
        find(docs, "Service", name)
        find(docs, "ServiceAccount", name)
    for name in ("postgres", "minio"):
        statefulset = find(docs, "StatefulSet", name)
        assert statefulset["spec"]["volumeClaimTemplates"], f"{name} keeps its data on a PersistentVolumeClaim"
    for name in ("auth-migrate", "catalog-migrate", "catalog-service-account", "minio-bucket"):
        find(docs, "Job", name)
    find(docs, "Ingress", "gateway")
    find(docs, "NetworkPolicy", "default-deny")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_the_restricted_namespace(overlay):
    docs = render_overlay(overlay)
    namespace = find(docs, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("overlay", ["small", "dev"])
def test_small_runs_one_replica_of_everything(overlay):
    docs = render_overlay(overlay)
    assert all(w.doc["spec"].get("replicas", 1) == 1 for w in workloads(docs) if w.kind != "Job")
    assert not [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")]


def test_production_autoscales_and_budgets_disruptions():
    docs = render_overlay("production")
    autoscaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert {"gateway", "inference"} <= autoscaled.keys()
    for name, hpa in autoscaled.items():
        deployment = find(docs, "Deployment", name)
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler, not the manifest, owns the count"
        assert hpa["spec"]["minReplicas"] >= 2
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    budgets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    for name in ("gateway", "auth", "catalog", "inference", "tfserving"):
        deployment = find(docs, "Deployment", name)
        assert (
            budgets[name]["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        replicas = autoscaled[name]["spec"]["minReplicas"] if name in autoscaled else deployment["spec"]["replicas"]
        assert replicas >= 2, f"{name}: a disruption budget needs more than one replica to allow any drain"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_profile(overlay):
    for workload in workloads(render_overlay(overlay)):
        where = f"{overlay}: {workload.kind}/{workload.name}"
        pod = workload.pod
        context = pod.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser", 1) != 0, where
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), where
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, f"{where}: volume {volume['name']}"
        for container in workload.containers():
            _check_container(container, f"{where} container {container['name']}")


def _check_container(container: dict, where: str) -> None:
    context = container.get("securityContext", {})
    assert context.get("allowPrivilegeEscalation") is False, where
    assert context.get("readOnlyRootFilesystem") is True, where
    assert context.get("runAsNonRoot", True) is True, where
    assert context.get("runAsUser", 1) != 0, where
    assert not context.get("privileged"), where
    assert context.get("capabilities", {}).get("drop") == ["ALL"], where
    assert not context.get("capabilities", {}).get("add"), where
    assert not any(port.get("hostPort") for port in container.get("ports", [])), where
    resources = container.get("resources", {})
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources.get(section, {}).keys(), f"{where}: {section}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_has_its_own_service_account_without_a_token(overlay):
    docs = render_overlay(overlay)
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    used = [w.pod.get("serviceAccountName", "default") for w in workloads(docs)]
    assert len(used) == len(set(used)), "each workload has its own ServiceAccount"
    for workload in workloads(docs):
        account = accounts[workload.pod["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False
        assert workload.pod["automountServiceAccountToken"] is False, workload.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_have_explicit_tags(overlay):
    images = [c["image"] for w in workloads(render_overlay(overlay)) for c in w.containers()]
    if overlay != "dev":
        assert "tensorflow/serving" in " ".join(images), "TF Serving runs the official image"
    for image in images:
        assert EXPLICIT_TAG.match(image), f"{image} needs an explicit tag other than latest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_are_headless_and_probed_over_grpc(overlay):
    docs = render_overlay(overlay)
    for name in ("auth", "catalog", "inference", "tfserving"):
        assert find(docs, "Service", name)["spec"]["clusterIP"] == "None", f"{name}: clients balance per pod"
    for name in ("auth", "catalog", "inference"):
        container = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" in container[probe], f"{name} {probe} uses the gRPC health protocol"
    gateway = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    tfserving = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]["containers"][0]
    startup = tfserving["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "model loading gets minutes, not seconds"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tfserving_gets_the_model_from_an_init_container_and_batches(overlay):
    docs = render_overlay(overlay)
    pod = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    shared = {m["name"] for m in init["volumeMounts"]} & {m["name"] for m in server["volumeMounts"]}
    assert any("emptyDir" in v for v in pod["volumes"] if v["name"] in shared)
    args = dict(a.removeprefix("--").split("=", 1) for a in server["args"])
    assert args["enable_batching"] == "true"
    config_mount = next(
        m for m in server["volumeMounts"] if args["batching_parameters_file"].startswith(m["mountPath"])
    )
    config_map = next(v["configMap"]["name"] for v in pod["volumes"] if v["name"] == config_mount["name"])
    batching = find(docs, "ConfigMap", config_map)["data"]["batching.config"]
    threads = int(re.search(r"num_batch_threads \{ value: (\d+) \}", batching).group(1))
    cpu_limit = int(server["resources"]["limits"]["cpu"])
    assert threads == cpu_limit == int(args["tensorflow_intra_op_parallelism"]), "thread pools match the CPU limit"
    inference = find(docs, "Deployment", "inference")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in inference["env"]}
    in_flight = int(
        env.get("TAGSMITH_BATCH_MAX_IN_FLIGHT") or InferenceSettings.model_fields["batch_max_in_flight"].default
    )
    assert in_flight == threads + 1, "inference keeps one batch queued at TF Serving, no more"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_committed(overlay):
    docs = render_overlay(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"]
    documented = DEPLOYMENT_GUIDE.read_text()
    for name, key in _secret_references(docs):
        if key is None:
            assert f"kubectl -n {NAMESPACE} create secret tls {name} " in documented, f"TLS Secret {name}"
            continue
        # The command may continue over several lines ending in a backslash.
        command = rf"kubectl -n {NAMESPACE} create secret generic {name}\b[^\n]*(\\\n[^\n]*)*--from-\w+={key}="
        assert re.search(command, documented), f"docs/deployment.md shows how to create Secret {name} with {key}"


def _secret_references(docs: tuple[dict, ...]) -> set[tuple[str, str | None]]:
    """(Secret name, key) of every Secret the manifests use; key None for a TLS Secret."""
    refs = set()
    for workload in workloads(docs):
        for container in workload.containers():
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
        mounts = {m["name"]: m["mountPath"] for c in workload.containers() for m in c.get("volumeMounts", [])}
        for volume in workload.pod.get("volumes", []):
            if "secret" in volume:
                env_paths = [e.get("value", "") for c in workload.containers() for e in c.get("env", [])]
                keys = [p.rsplit("/", 1)[1] for p in env_paths if p.startswith(mounts[volume["name"]] + "/")]
                refs.update((volume["secret"]["secretName"], key) for key in keys)
    ingress_tls = [t["secretName"] for d in docs if d["kind"] == "Ingress" for t in d["spec"].get("tls", [])]
    refs.update((name, None) for name in ingress_tls)
    return refs


def test_dev_runs_the_model_server_with_flags_it_understands(tmp_path):
    """The dev overlay's stand-in for TF Serving takes the same flags; they must all parse, batching file included."""
    from services.modelserver.config import load_settings

    docs = render_overlay("dev")
    pod = find(docs, "Deployment", "tfserving")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"].split(":")[0].endswith("tagsmith/modelserver")
    assert "nodeSelector" not in pod, "the model server also runs on arm64 nodes"
    config_map = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    batching = tmp_path / "batching.config"
    batching.write_text(find(docs, "ConfigMap", config_map)["data"]["batching.config"])
    args = [
        re.sub(r"^--batching_parameters_file=.*", f"--batching_parameters_file={batching}", a) for a in server["args"]
    ]
    settings = load_settings(args)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert (settings.port, settings.metrics_port) == (ports["grpc"], ports["metrics"])
    assert settings.host == "0.0.0.0"
    assert settings.num_batch_threads == settings.intra_op_threads == int(server["resources"]["limits"]["cpu"])
    assert settings.model_config_file is not None
    served = served_base_paths(docs, pod)
    assert served == {name: f"/models/{name}" for name in ("efficientnet_lite0", "face_detector")}
