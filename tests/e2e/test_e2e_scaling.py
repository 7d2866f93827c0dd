"""Horizontal scaling on one machine, as Kubernetes runs it: two replicas each of gateway, catalog and inference
against one PostgreSQL, every client balancing round-robin over the replicas' addresses."""

import io
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from local.stack import Stack, StackOptions
from tests.support.postgres import create_database
from tests.support.waiting import eventually_blocking

REPLICAS = {"gateway": 2, "catalog": 2, "inference": 2}
UPLOADS = 200
CONCURRENCY = 8
UPLOAD_RPC = "/tagsmith.catalog.v1.CatalogService/UploadImage"
CLASSIFY_RPC = "/tagsmith.inference.v1.InferenceService/Classify"
# Round-robin over two replicas gives each about half; a quarter leaves room for the pending-image worker's share.
FAIR_SHARE = 0.25


@pytest.fixture(scope="module")
def replicated(modelserver_addr, model_base_path, postgres_admin_dsn, tmp_path_factory):
    """The replicas, with the session's model server (the tests count calls at inference, not below it)."""
    options = StackOptions(
        model_base_path=model_base_path,
        postgres_dsn=create_database(postgres_admin_dsn),
        replicas=REPLICAS,
        modelserver_addr=modelserver_addr,
    )
    with Stack(options).start(tmp_path_factory.mktemp("replicated")) as running:
        yield running


@pytest.fixture(scope="module")
def token(replicated) -> str:
    credentials = {"username": "scaler", "password": "scale-out-password"}
    with httpx.Client(base_url=replicated.gateway_urls[0], timeout=30) as client:
        client.post("/v1/auth/register", json=credentials).raise_for_status()
        return client.post("/v1/auth/login", json=credentials).json()["access_token"]


@pytest.fixture(scope="module")
def uploaded(replicated, token) -> dict[str, tuple[bytes, int]]:
    """Uploads UPLOADS distinct photos, alternating gateways; returns uid -> (bytes, gateway index)."""
    files = [_photo(i) for i in range(UPLOADS)]
    clients = [_client(url, token) for url in replicated.gateway_urls]
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            replies = list(pool.map(lambda i: _upload(clients[i % len(clients)], i, files[i]), range(UPLOADS)))
    finally:
        for client in clients:
            client.close()
    return {uid: (files[i], i % len(clients)) for i, uid in enumerate(replies)}


def _photo(seed: int) -> bytes:
    """A small JPEG, different for every seed: coloured noise under a solid block."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (96, 96), rng.randbytes(96 * 96 * 3))
    image.paste(tuple(rng.randrange(256) for _ in range(3)), (16, 16, 80, 80))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _upload(client: httpx.Client, index: int, data: bytes) -> str:
    reply = client.post("/v1/images", files={"image": (f"photo-{index}.jpg", data, "image/jpeg")})
    assert reply.status_code == 201, reply.text
    return reply.json()["uid"]


def _list_all(client: httpx.Client) -> dict[str, dict]:
    images, page_token = {}, ""
    while True:
        page = client.get("/v1/images", params={"page_size": 100, "page_token": page_token})
        page.raise_for_status()
        body = page.json()
        images.update({image["uid"]: image for image in body["images"]})
        page_token = body["next_page_token"]
        if not page_token:
            return images


def _wait_until_classified(client: httpx.Client, timeout: float = 90) -> dict[str, dict]:
    def none_pending() -> dict[str, dict] | None:
        images = _list_all(client)
        return images if all(image["status"] != "pending" for image in images.values()) else None

    return eventually_blocking(none_pending, awaiting="no image pending", within=timeout, interval=0.5)


def _counter(url: str, metric: str, **labels: str) -> float:
    """The sum of one counter's samples matching `labels` on a Prometheus endpoint."""
    text = httpx.get(url, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == f"{metric}_total" and labels.items() <= sample.labels.items()
    )


def _metrics_urls(replicated: Stack, service: str) -> list[str]:
    """Each replica's /metrics: the gateway serves it on its HTTP port, the gRPC services on their metrics port."""
    if service == "gateway":
        return [f"{url}/metrics" for url in replicated.gateway_urls]
    children = [c for c in replicated.children if c.name == service or c.name.startswith(f"{service}-")]
    return [f"http://{replicated.options.host}:{c.env['TAGSMITH_METRICS_PORT']}/metrics" for c in children]


def test_every_image_is_classified_exactly_once(replicated, token, uploaded):
    assert len(uploaded) == UPLOADS, "every upload got its own image"
    with _client(replicated.gateway_urls[0], token) as client:
        images = _wait_until_classified(client)
    assert images.keys() == uploaded.keys()
    assert {image["status"] for image in images.values()} == {"classified"}
    assert all(image["labels"] and image["category"] for image in images.values())
    urls = _metrics_urls(replicated, "inference")
    classified = [_counter(url, "grpc_server_handled", method=CLASSIFY_RPC, code="OK") for url in urls]
    attempts = [_counter(url, "grpc_server_handled", method=CLASSIFY_RPC) for url in urls]
    assert sum(classified) == UPLOADS, f"successful Classify calls per inference replica {classified}, all {attempts}"


def test_images_are_listed_and_downloadable_from_either_gateway(replicated, token, uploaded):
    clients = [_client(url, token) for url in replicated.gateway_urls]
    try:
        listings = [_list_all(client).keys() for client in clients]
        assert listings[0] == listings[1] == uploaded.keys()
        for uid, (data, gateway) in uploaded.items():
            other = clients[1 - gateway]
            reply = other.get(f"/v1/images/{uid}/content")
            assert reply.status_code == 200 and reply.content == data, uid
    finally:
        for client in clients:
            client.close()


def test_each_replica_served_part_of_the_load(replicated, uploaded):
    shares = {
        "gateway": [
            _counter(url, "http_requests", method="POST", route="/v1/images", status="201")
            for url in _metrics_urls(replicated, "gateway")
        ],
        "catalog": [
            _counter(url, "grpc_server_handled", method=UPLOAD_RPC, code="OK")
            for url in _metrics_urls(replicated, "catalog")
        ],
        "inference": [
            _counter(url, "grpc_server_handled", method=CLASSIFY_RPC, code="OK")
            for url in _metrics_urls(replicated, "inference")
        ],
    }
    for service, counts in shares.items():
        assert len(counts) == REPLICAS[service], service
        assert sum(counts) == len(uploaded), f"{service}: {counts}"
        assert min(counts) >= FAIR_SHARE * len(uploaded), f"{service} replicas split the load {counts}"
