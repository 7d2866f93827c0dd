"""TF Serving unreachable, stopped or too slow: the caller gets UNAVAILABLE or DEADLINE_EXCEEDED in time."""

import asyncio
import logging
import socket
import time

import grpc
import pytest
from tagsmith.inference.v1 import inference_pb2_grpc

from services.common.channels import open_channel
from services.common.model_contract import CLASSIFIER_MODEL, PIXELS_INPUT, PIXELS_SIGNATURE, SCORES_OUTPUT
from services.inference import tfserving
from services.inference.classifier import ClassifierClient
from services.inference.model_client import ModelClient, open_tfserving_channel
from services.inference.server import check_model
from tests.support.images import sample_image
from tests.support.inference_fixtures import classify_requests, stand_in_tfserving, start_modelserver


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def hanging_tfserving():
    """A stand-in TF Serving that accepts Predict calls and never answers (nothing real can be made this slow)."""

    async def hang(request, context):
        await asyncio.sleep(3600)

    async with stand_in_tfserving({tfserving.PREDICT: hang}) as address:
        yield address


async def test_a_stand_in_tfserving_answers_only_the_methods_it_is_given():
    async def answer(request, context):
        return tfserving.PredictResponse(model_spec=request.model_spec)

    async with (
        stand_in_tfserving({tfserving.PREDICT: answer}) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        request = tfserving.PredictRequest()
        request.model_spec.name = "stand-in"
        assert (await tfserving.PREDICT.callable(channel)(request, timeout=10)).model_spec.name == "stand-in"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await tfserving.GET_MODEL_METADATA.callable(channel)(tfserving.GetModelMetadataRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def timed_classify(port: int, token: str, data: bytes, timeout: float | None = 30):
    started = time.monotonic()
    async with open_channel(f"127.0.0.1:{port}", retries=False) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Classify(
                iter(classify_requests(data)), metadata=(("authorization", f"Bearer {token}"),), timeout=timeout
            )
    return err.value, time.monotonic() - started


async def test_unreachable_tfserving_is_unavailable_quickly(inference_server, test_keys):
    running = await inference_server(tfserving_addr=f"127.0.0.1:{closed_port()}")
    error, elapsed = await timed_classify(running.port, test_keys.token(), sample_image())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "TensorFlow Serving" in error.details()
    assert elapsed < 3


async def test_slow_tfserving_answers_within_the_callers_deadline(inference_server, test_keys, hanging_tfserving):
    running = await inference_server(tfserving_addr=hanging_tfserving)
    error, elapsed = await timed_classify(running.port, test_keys.token(), sample_image(), timeout=1.0)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.5


async def test_slow_tfserving_is_cut_off_by_the_predict_timeout(inference_server, test_keys, hanging_tfserving):
    running = await inference_server(tfserving_addr=hanging_tfserving, predict_timeout_seconds=0.5)
    error, elapsed = await timed_classify(running.port, test_keys.token(), sample_image(), timeout=20)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not answer within the deadline" in error.details()
    assert elapsed < 1.5


async def test_model_server_stopped_mid_test(inference_server, test_keys, model_base_path, tmp_path):
    with start_modelserver(model_base_path, tmp_path) as (address, process):
        running = await inference_server(tfserving_addr=address)
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            metadata = (("authorization", f"Bearer {test_keys.token()}"),)
            reply = await stub.Classify(iter(classify_requests(sample_image("coffee"))), metadata=metadata, timeout=30)
        assert reply.model_version == "1"
        process.terminate()
        process.wait(timeout=10)
        error, elapsed = await timed_classify(running.port, test_keys.token(), sample_image("chelsea"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert elapsed < 3


def model_client(address: str) -> ClassifierClient:
    return ClassifierClient(
        ModelClient(open_tfserving_channel(address), address=address, model_name=CLASSIFIER_MODEL),
        signature_name=PIXELS_SIGNATURE,
        input_key=PIXELS_INPUT,
        scores_output=SCORES_OUTPUT,
    )


def ours(caplog) -> list[logging.LogRecord]:
    """The check's own log lines: gRPC's poller may log an unrelated callback error left by an earlier test."""
    return [record for record in caplog.records if record.name == "services.inference.server"]


async def test_a_model_server_still_starting_is_waited_for_quietly(caplog):
    """During start-up TF Serving may not listen yet: no warning until the grace has passed, then one."""
    caplog.set_level(logging.INFO, logger="services.inference.server")
    check = asyncio.create_task(check_model(model_client(f"127.0.0.1:{closed_port()}"), 1000, grace=1.5))
    await asyncio.sleep(1.0)
    assert ours(caplog) == []
    await asyncio.sleep(2.5)
    assert not check.done()
    check.cancel()
    assert [record.levelname for record in ours(caplog)] == ["WARNING"]
    message = ours(caplog)[0].getMessage()
    assert message.endswith(" is unavailable 1.5 s after start; classifications fail until it answers"), message


async def test_the_model_check_reports_which_server_serves_the_model(modelserver_addr, caplog):
    caplog.set_level(logging.INFO, logger="services.inference.server")
    await asyncio.wait_for(check_model(model_client(modelserver_addr), 1000), timeout=60)
    assert [record.getMessage() for record in ours(caplog)] == [
        f"model {CLASSIFIER_MODEL} version 1 is served by the Tagsmith model server (services.modelserver on "
        f"TensorFlow {tensorflow_version()})"
    ]


def tensorflow_version() -> str:
    from importlib.metadata import version

    return version("tensorflow")
