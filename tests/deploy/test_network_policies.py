"""The NetworkPolicies allow exactly the call graph the manifests configure, and nothing else."""

from urllib.parse import urlsplit

import pytest

from tests.deploy.manifests import NAMESPACE, OVERLAYS, env_values, find, render_overlay, resolve_port, workloads
from tests.deploy.netpol import Pod, Policies, cluster_pods

OUTSIDE = Pod("outside", "ingress-nginx")
MONITORING = Pod("prometheus", "monitoring")
# An unknown pod in Tagsmith's namespace: the default deny covers its egress too.
STRANGER = Pod("stranger", NAMESPACE, {"app.kubernetes.io/name": "debug-shell"})
INTERNET = Pod("internet", "elsewhere", ports={"https": 443})
DNS = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53})
CLUSTER_DOMAIN = f".{NAMESPACE}.svc.cluster.local"


def _host_port(value: str) -> tuple[str, int] | None:
    """The host and port a setting points at, for dns:/// targets, URLs and host:port values."""
    if value.startswith("dns:///"):
        value = value.removeprefix("dns:///")
    url = urlsplit(value if "://" in value else f"//{value}")
    if url.hostname and url.hostname.endswith(CLUSTER_DOMAIN) and url.port:
        return url.hostname.removesuffix(CLUSTER_DOMAIN), url.port
    return None


def _backend(docs: tuple[dict, ...], pods: dict[str, Pod], service_name: str, port: int) -> tuple[Pod, int]:
    service = find(docs, "Service", service_name)
    (entry,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    (pod,) = [p for p in pods.values() if service["spec"]["selector"].items() <= p.labels.items()]
    return pod, resolve_port(entry.get("targetPort", port), pod.ports)


def expected_edges(docs: tuple[dict, ...]) -> set[tuple[str, str, int]]:
    """(source, target, port) for every connection the configuration implies."""
    pods = {p.name: p for p in cluster_pods(docs)}
    edges = set()
    for workload in workloads(docs):
        for container in workload.containers():
            for value in env_values(container).values():
                target = _host_port(value or "")
                if target:
                    pod, port = _backend(docs, pods, *target)
                    edges.add((workload.name, pod.name, port))
        port = workload.annotations.get("prometheus.io/port")
        if port:
            edges.add((MONITORING.name, workload.name, int(port)))
    ingress = find(docs, "Ingress", "gateway")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = find(docs, "Service", backend["name"])
            (entry,) = [p for p in service["spec"]["ports"] if p.get("name") == backend["port"]["name"]]
            pod, port = _backend(docs, pods, backend["name"], entry["port"])
            edges.add((OUTSIDE.name, pod.name, port))
    return edges


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_call_graph_is_what_the_services_need(overlay):
    edges = expected_edges(render_overlay(overlay))
    calls = {(s, t) for s, t, _ in edges if s not in (MONITORING.name, OUTSIDE.name, STRANGER.name)}
    assert calls >= {
        ("gateway", "auth"),
        ("gateway", "catalog"),
        ("catalog", "inference"),
        ("catalog", "postgres"),
        ("catalog", "minio"),
        ("inference", "tfserving"),
        ("auth", "postgres"),
        ("auth-migrate", "postgres"),
        ("catalog-migrate", "postgres"),
        ("minio-bucket", "minio"),
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policies_allow_exactly_the_call_graph(overlay):
    docs = render_overlay(overlay)
    policies = Policies(docs)
    pods = cluster_pods(docs)
    allowed = {
        (source.name, target.name, port)
        for source in (*pods, OUTSIDE, MONITORING, STRANGER)
        for target in pods
        for port in set(target.ports.values())
        if policies.allows(source, target, port)
    }
    expected = expected_edges(docs)
    assert expected - allowed == set(), "connections the services need but the policies block"
    assert allowed - expected == set(), "connections the policies allow but nothing needs"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(overlay):
    docs = render_overlay(overlay)
    policies = Policies(docs)
    reachable = {p.name for p in cluster_pods(docs) for port in p.ports.values() if policies.allows(OUTSIDE, p, port)}
    assert reachable == {"gateway"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_resolve_names_but_reach_nothing_outside(overlay):
    docs = render_overlay(overlay)
    policies = Policies(docs)
    for pod in cluster_pods(docs):
        assert policies.allows(pod, DNS, 53, "UDP") and policies.allows(pod, DNS, 53, "TCP"), pod.name
        assert not policies.allows(pod, INTERNET, 443), pod.name
        assert not policies.allows(pod, DNS, 443), pod.name
