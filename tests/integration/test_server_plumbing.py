"""The shared server bootstrap: health, reflection, auth interceptor, request ids, metrics, errors."""

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.common.channels import open_channel
from services.common.interceptors import AuthInterceptor
from services.common.server import start_server
from services.common.settings import ServiceSettings


class _Probe(inference_pb2_grpc.InferenceServiceServicer):
    async def GetLimits(self, request, context):
        return inference_pb2.Limits(max_bytes=1)

    async def GetModel(self, request, context):
        raise RuntimeError("boom: secret detail")


@pytest.fixture
async def probe_server(test_keys):
    settings = ServiceSettings(host="127.0.0.1", port=0, metrics_port=0)
    running = await start_server(
        settings,
        register=lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(_Probe(), s),
        service_names=["tagsmith.inference.v1.InferenceService"],
        interceptors=[AuthInterceptor(test_keys.verifier())],
    )
    yield running
    await running.stop(0)


async def test_health_is_open_and_serving(probe_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service="tagsmith.inference.v1.InferenceService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_missing_and_valid_token(probe_server, test_keys):
    async with open_channel(f"127.0.0.1:{probe_server.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetLimits(inference_pb2.GetLimitsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await stub.GetLimits(
            inference_pb2.GetLimitsRequest(), metadata=(("authorization", f"Bearer {test_keys.token()}"),)
        )
    assert reply.max_bytes == 1


async def test_unexpected_error_is_internal_without_detail(probe_server, test_keys):
    async with open_channel(f"127.0.0.1:{probe_server.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        call = stub.GetModel(
            inference_pb2.GetModelRequest(),
            metadata=(("authorization", f"Bearer {test_keys.token()}"), ("x-request-id", "req-123")),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret detail" not in err.value.details()
    assert "req-123" in err.value.details()


async def test_metrics_count_calls_by_code(probe_server, test_keys):
    async with open_channel(f"127.0.0.1:{probe_server.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await stub.GetLimits(
            inference_pb2.GetLimitsRequest(), metadata=(("authorization", f"Bearer {test_keys.token()}"),)
        )
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{probe_server.metrics_port}/metrics")).text
    assert 'grpc_server_handled_total{code="OK",method="/tagsmith.inference.v1.InferenceService/GetLimits"} 1.0' in body


async def test_graceful_stop_reports_not_serving(probe_server):
    await probe_server.health.enter_graceful_shutdown()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
