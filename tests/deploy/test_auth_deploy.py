"""Login throttling and token verification as deployed: who is trusted to name the client, where keys are cached."""

import ipaddress
from pathlib import PurePosixPath

import pytest

from tests.deploy.manifests import K8S, OVERLAYS, env_values, render, render_overlay, service_containers


def _env(docs, service: str) -> tuple[dict, dict]:
    """(literal env, {pod, container}) of the one serving container of `service` (not its setup Jobs)."""
    (found,) = [
        (env_values(c), w.pod, c) for w, c, s in service_containers(docs) if s == service and w.kind == "Deployment"
    ]
    return found[0], {"pod": found[1], "container": found[2]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_trusts_its_ingress_and_auth_believes_the_gateway(overlay):
    docs = render_overlay(overlay)
    gateway, _ = _env(docs, "gateway")
    proxies = [entry.strip() for entry in gateway["TAGSMITH_TRUSTED_PROXIES"].split(",")]
    assert "*" not in proxies, "trusting every sender lets any client choose its own address"
    for entry in proxies:
        assert ipaddress.ip_network(entry).is_private, f"{entry} is not an in-cluster range"
    auth, _ = _env(docs, "auth")
    assert auth["TAGSMITH_TRUST_FORWARDED_FOR"] == "true"


def test_the_base_trusts_no_proxy():
    gateway, _ = _env(render(K8S / "base"), "gateway")
    assert gateway["TAGSMITH_TRUSTED_PROXIES"] == ""


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", ["catalog", "inference"])
def test_token_verifiers_cache_auth_keys_on_a_writable_volume(overlay, service):
    env, spec = _env(render_overlay(overlay), service)
    cache = PurePosixPath(env["TAGSMITH_AUTH_CACHE_DIR"])
    mounts = {PurePosixPath(m["mountPath"]): m["name"] for m in spec["container"].get("volumeMounts", [])}
    (volume,) = [name for path, name in mounts.items() if path in cache.parents or path == cache]
    (declared,) = [v for v in spec["pod"]["volumes"] if v["name"] == volume]
    assert "emptyDir" in declared, "an emptyDir survives container restarts, and needs no shared storage"
