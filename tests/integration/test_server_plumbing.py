"""The shared server bootstrap: health, reflection, auth interceptor, request ids, metrics, errors."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg_pool import PoolTimeout
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

import services.common.db  # noqa: F401 (the interceptor recognises database errors once the plumbing is loaded)
from services.common.channels import open_channel
from services.common.errors import StatusError, unavailable
from services.common.interceptors import AuthInterceptor
from services.common.server import CannotListen, start_server
from services.common.settings import ServiceSettings
from tests.support.inference_fixtures import INFERENCE_SERVICE

REPO = Path(__file__).resolve().parents[2]


class _Probe(inference_pb2_grpc.InferenceServiceServicer):
    """GetLimits answers; GetModel raises `failure` and counts the calls that reached it."""

    def __init__(self) -> None:
        self.failure: Exception = RuntimeError("boom: secret detail")
        self.calls = 0

    async def GetLimits(self, request, context):
        return inference_pb2.Limits(max_bytes=1)

    async def GetModel(self, request, context):
        self.calls += 1
        raise self.failure


@pytest.fixture
def probe() -> _Probe:
    return _Probe()


@pytest.fixture
async def probe_server(probe, test_keys):
    settings = ServiceSettings(host="127.0.0.1", port=0, metrics_port=0)
    running = await start_server(
        settings,
        register=lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(probe, s),
        service_names=[INFERENCE_SERVICE],
        interceptors=[AuthInterceptor(test_keys.verifier())],
    )
    yield running
    await running.stop(0)


async def test_health_is_open_and_serving(probe_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=INFERENCE_SERVICE))
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


async def _get_model_failure(probe_server, test_keys) -> grpc.aio.AioRpcError:
    """GetModel's failure through the project's channel (which retries UNAVAILABLE unless told not to)."""
    async with open_channel(f"127.0.0.1:{probe_server.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        metadata = (("authorization", f"Bearer {test_keys.token()}"), ("x-request-id", "req-123"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetModel(inference_pb2.GetModelRequest(), metadata=metadata)
    return err.value


async def test_a_status_error_is_answered_with_its_code_message_and_metadata(probe, probe_server, test_keys):
    reason = ("error-reason", "NEEDS_SETUP")
    probe.failure = StatusError(grpc.StatusCode.FAILED_PRECONDITION, "set it up first", trailing_metadata=(reason,))
    failure = await _get_model_failure(probe_server, test_keys)
    assert (failure.code(), failure.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "set it up first")
    trailing = dict(failure.trailing_metadata())
    assert trailing["error-reason"] == "NEEDS_SETUP" and trailing["x-request-id"] == "req-123"


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (unavailable("object storage is unavailable; try again shortly"), "object storage is unavailable"),
        (psycopg.OperationalError("connection refused"), "the database is unavailable; try again shortly"),
        (PoolTimeout("couldn't get a connection after 2.00 sec"), "the database is unavailable; try again shortly"),
    ],
)
async def test_an_outage_is_unavailable_with_retry_after_and_no_channel_retries(
    probe, probe_server, test_keys, failure, message
):
    probe.failure = failure
    answer = await _get_model_failure(probe_server, test_keys)
    assert answer.code() == grpc.StatusCode.UNAVAILABLE and message in answer.details()
    assert dict(answer.trailing_metadata())["retry-after"].isdigit()
    assert probe.calls == 1, "the pushback stops the caller's channel from retrying an outage at once"


async def test_a_momentary_unavailable_is_left_to_the_channel_to_retry(probe, probe_server, test_keys):
    """What inference answers while TF Serving is briefly busy: no pushback, so the caller's channel retries."""
    probe.failure = StatusError(grpc.StatusCode.UNAVAILABLE, "TensorFlow Serving is unavailable; try again")
    answer = await _get_model_failure(probe_server, test_keys)
    assert answer.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == 4


async def test_metrics_count_calls_by_code(probe_server, test_keys):
    async with open_channel(f"127.0.0.1:{probe_server.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await stub.GetLimits(
            inference_pb2.GetLimitsRequest(), metadata=(("authorization", f"Bearer {test_keys.token()}"),)
        )
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{probe_server.metrics_port}/metrics")).text
    assert f'grpc_server_handled_total{{code="OK",method="/{INFERENCE_SERVICE}/GetLimits"}} 1.0' in body


async def test_graceful_stop_reports_not_serving(probe_server):
    await probe_server.health.enter_graceful_shutdown()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def held_port():
    """A port another program listens on (a plain socket, without SO_REUSEPORT)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


@pytest.mark.parametrize(("field", "setting"), [("port", "TAGSMITH_PORT"), ("metrics_port", "TAGSMITH_METRICS_PORT")])
async def test_a_busy_port_names_the_setting_that_moves_it(held_port, field, setting):
    settings = ServiceSettings(host="127.0.0.1", **{"port": 0, "metrics_port": 0, field: held_port})
    with pytest.raises(CannotListen) as refused:
        await start_server(settings, register=lambda s: None, service_names=[])
    assert str(refused.value) == (
        f"cannot listen on 127.0.0.1:{held_port}: port {held_port} is in use by another program; "
        f"set {setting} to another port (0 picks a free one)"
    )


async def test_a_second_server_cannot_share_a_grpc_port(probe_server):
    """gRPC would otherwise bind a port another gRPC server holds (SO_REUSEPORT) and take half of its calls."""
    settings = ServiceSettings(host="127.0.0.1", port=probe_server.port)
    with pytest.raises(CannotListen, match=f"port {probe_server.port} is in use"):
        await start_server(settings, register=lambda s: None, service_names=[])


@pytest.mark.parametrize(
    ("service", "setting"),
    [("inference", "TAGSMITH_PORT"), ("inference", "TAGSMITH_METRICS_PORT"), ("gateway", "TAGSMITH_PORT")],
)
def test_a_service_on_a_busy_port_says_so_in_one_line(held_port, service, setting):
    env = {key: value for key, value in os.environ.items() if not key.startswith("TAGSMITH_")}
    env |= {"TAGSMITH_PORT": "0", "TAGSMITH_METRICS_PORT": "0", setting: str(held_port)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "gen"), str(REPO)])
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"cannot listen on 127.0.0.1:{held_port}: port {held_port} is in use by another program; "
        f"set {setting} to another port (0 picks a free one)"
    ]


def test_the_model_server_refuses_a_busy_port_before_loading_models(held_port, model_base_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("TAGSMITH_")}
    env |= {"TAGSMITH_PORT": str(held_port), "TAGSMITH_METRICS_PORT": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "gen"), str(REPO)])
    model = model_base_path / "efficientnet_lite0"
    args = ["-m", "services.modelserver", "--host", "127.0.0.1", "--model_base_path", str(model)]
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "loaded model" not in result.stdout + result.stderr
    # Only TensorFlow's own import lines may come before it.
    assert result.stderr.splitlines()[-1] == (
        f"cannot listen on 127.0.0.1:{held_port}: port {held_port} is in use by another program; "
        "set TAGSMITH_PORT to another port (0 picks a free one)"
    )
