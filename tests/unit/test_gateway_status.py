"""Readiness of a gateway pod, and the administrators' status page listing every backend and dependency."""

from tests.support.ports import free_port


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def test_auth_and_inference_down_keep_the_pod_ready(gateway_factory):
    gateway = await gateway_factory(auth_addr=f"127.0.0.1:{free_port()}", inference_addr=f"127.0.0.1:{free_port()}")
    ready = await gateway.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["backends"] == {"auth": "UNREACHABLE", "catalog": "SERVING", "inference": "UNREACHABLE"}


async def test_no_backend_serving_makes_the_pod_unready(gateway_factory):
    closed = {name: f"127.0.0.1:{free_port()}" for name in ("auth_addr", "catalog_addr", "inference_addr")}
    gateway = await gateway_factory(**closed)
    ready = await gateway.get("/readyz")
    assert ready.status_code == 503
    assert set(ready.json()["backends"].values()) == {"UNREACHABLE"}
    metrics = (await gateway.get("/metrics")).text
    assert 'tagsmith_backend_up{backend="catalog"} 0.0' in metrics


async def test_status_lists_every_backend_and_dependency_for_admins(gateway_factory, test_keys):
    gateway = await gateway_factory(inference_addr=f"127.0.0.1:{free_port()}")
    reply = await gateway.get("/v1/status", headers=_bearer(test_keys.token("root", roles=("user", "admin"))))
    assert reply.status_code == 200
    body = reply.json()
    assert (body["status"], body["ready"]) == ("degraded", True)
    assert body["backends"]["inference"] == {"status": "UNREACHABLE", "dependencies": {}}
    # The fake backends do not report their dependencies: reachable, but unknown.
    assert body["backends"]["catalog"] == {
        "status": "SERVING",
        "dependencies": {"database": "UNKNOWN", "object_storage": "UNKNOWN"},
    }


async def test_status_is_for_admins_only(gateway, test_keys):
    assert (await gateway.get("/v1/status")).status_code == 401
    user = await gateway.get("/v1/status", headers=_bearer(test_keys.token("ada")))
    assert user.status_code == 403
    assert user.json()["error"]["message"] == "only administrators may see the system status"
    forged = await gateway.get("/v1/status", headers=_bearer(test_keys.token("root", roles=("admin",))[:-4] + "AAAA"))
    assert forged.status_code == 401
