"""The model server in-process: a ModelServerConfig with two versions and a label, and server-side batching."""

import asyncio

import grpc
import httpx
import pytest

from services.inference import tfserving
from tests.support.images import sample_image
from tests.support.inference_fixtures import MODEL_NAME

CONFIG = """
model_config_list {
  config {
    name: "%s"
    base_path: "versions"
    model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
  }
}
"""


@pytest.fixture(scope="module")
def repository(model_base_path, tmp_path_factory):
    """Versions 1 and 2 of the real model (2 links to 1), loaded once for the module."""
    from services.modelserver.config import load_settings
    from services.modelserver.models import ModelRepository, configured_sources

    root = tmp_path_factory.mktemp("versioned")
    (root / "versions").mkdir()
    for version in ("1", "2"):
        (root / "versions" / version).symlink_to(model_base_path / MODEL_NAME / "1", target_is_directory=True)
    (root / "models.config").write_text(CONFIG % MODEL_NAME)
    return ModelRepository.load(configured_sources(load_settings(["--model_config_file", str(root / "models.config")])))


@pytest.fixture
async def server(repository):
    from services.modelserver.config import load_settings
    from services.modelserver.server import create_server

    settings = load_settings(
        [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics_port",
            "0",
            "--max_batch_size",
            "8",
            "--batch_timeout_micros",
            "20000",
        ]
    )
    running = await create_server(settings, repository=repository)
    yield running
    await running.stop(0)


def spec(**fields):
    model_spec = tfserving.ModelSpec(name=MODEL_NAME)
    if "version" in fields:
        model_spec.version.value = fields["version"]
    if "label" in fields:
        model_spec.version_label = fields["label"]
    return model_spec


async def served_version(channel, model_spec) -> int:
    request = tfserving.PredictRequest(model_spec=model_spec, output_filter=["top_k_classes"])
    request.inputs["images"].CopyFrom(tfserving.string_tensor([sample_image("coffee")]))
    reply = await tfserving.PREDICT.callable(channel)(request, timeout=30)
    return reply.model_spec.version.value


async def test_versions_and_labels(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert await served_version(channel, spec()) == 2
        assert await served_version(channel, spec(version=1)) == 1
        assert await served_version(channel, spec(label="stable")) == 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await served_version(channel, spec(label="canary"))
        status = await tfserving.GET_MODEL_STATUS.callable(channel)(tfserving.GetModelStatusRequest(model_spec=spec()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [s.version for s in status.model_version_status] == [1, 2]


async def test_concurrent_predicts_are_batched(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        await served_version(channel, spec(version=1))
        versions = await asyncio.gather(*(served_version(channel, spec(version=1)) for _ in range(16)))
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")).text
    count = _metric(metrics, f'modelserver_batch_size_count{{model="{MODEL_NAME}",version="1"}}')
    total = _metric(metrics, f'modelserver_batch_size_sum{{model="{MODEL_NAME}",version="1"}}')
    assert versions == [1] * 16
    assert total == 17
    assert count <= 1 + 16 / 2  # the warm-up call, then batches of several calls each


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")
