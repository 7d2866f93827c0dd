"""The model server honours the SavedModel's TF Serving warm-up file: runs it at load, fails the load if it fails."""

import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

from services.common import model_contract as contract
from services.inference import tfserving
from tests.support.images import sample_image
from tests.support.inference_fixtures import MODEL_NAME, REPO


def version_with_warmup(model_base_path, root, requests: list[bytes] | None):
    """A version directory linking to the real model's files, with the given warm-up records (None: no file)."""
    real = model_base_path / MODEL_NAME / "1"
    version = root / MODEL_NAME / "1"
    version.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name != "assets.extra":
            (version / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    if requests is not None:
        (version / "assets.extra").mkdir()
        with tf.io.TFRecordWriter(str(version / contract.WARMUP_FILE)) as writer:
            for record in requests:
                writer.write(record)
    return version


def predict_record(signature: str, key: str, array: np.ndarray) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    return log.SerializeToString()


def pixels_record() -> bytes:
    return predict_record(contract.PIXELS_SIGNATURE, contract.PIXELS_INPUT, np.zeros((1, 224, 224, 3), np.uint8))


def test_the_built_model_ships_warmup_requests_for_both_signatures(model_base_path):
    from services.modelserver.warmup import read_requests

    requests = read_requests(model_base_path / MODEL_NAME / "1" / contract.WARMUP_FILE)
    assert {r.model_spec.signature_name for r in requests} == {contract.ENCODED_SIGNATURE, contract.PIXELS_SIGNATURE}


async def test_server_runs_the_warmup_file_before_serving(model_base_path):
    from services.modelserver.config import load_settings
    from services.modelserver.server import create_server
    from services.modelserver.warmup import read_requests

    expected = len(read_requests(model_base_path / MODEL_NAME / "1" / contract.WARMUP_FILE))
    args = ["--host", "127.0.0.1", "--port", "0", "--metrics_port", "0", "--model_base_path", str(model_base_path)]
    # TensorFlow is already running in this process: its thread pools can no longer be sized (0 leaves them).
    args += ["--tensorflow_intra_op_parallelism", "0", "--tensorflow_inter_op_parallelism", "0"]
    running = await create_server(load_settings(args))
    try:
        labels = {"model": MODEL_NAME, "version": "1"}
        assert running.registry.get_sample_value("modelserver_warmup_requests", labels) == expected > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            request = tfserving.PredictRequest(model_spec=tfserving.ModelSpec(name=MODEL_NAME))
            request.inputs["images"].CopyFrom(tfserving.string_tensor([sample_image("coffee")]))
            reply = await tfserving.PREDICT.callable(channel)(request, timeout=30)
            assert tfserving.to_numpy(reply.outputs["top_k_classes"])[0, 0] == 967
    finally:
        await running.stop(0)


def test_load_runs_every_record_and_can_be_told_not_to(model_base_path, tmp_path):
    from services.modelserver.models import load_servable

    records = [pixels_record(), pixels_record(), predict_record("", "images", np.array([sample_image()], object))]
    version = version_with_warmup(model_base_path, tmp_path, records)
    assert load_servable(MODEL_NAME, 1, version).warmup_requests == 3
    assert load_servable(MODEL_NAME, 1, version, run_warmup=False).warmup_requests == 0


def test_a_version_without_warmup_file_loads(model_base_path, tmp_path):
    from services.modelserver.models import load_servable

    assert load_servable(MODEL_NAME, 1, version_with_warmup(model_base_path, tmp_path, None)).warmup_requests == 0


def test_a_failing_warmup_request_fails_the_load(model_base_path, tmp_path):
    from services.modelserver.models import load_servable

    wrong_size = predict_record(contract.PIXELS_SIGNATURE, contract.PIXELS_INPUT, np.zeros((1, 64, 64, 3), np.uint8))
    version = version_with_warmup(model_base_path, tmp_path, [pixels_record(), wrong_size])
    with pytest.raises(ValueError, match="failed its warm-up") as error:
        load_servable(MODEL_NAME, 1, version)
    message = str(error.value)
    assert f"model {MODEL_NAME} version 1 failed its warm-up" in message
    assert "warm-up request 1" in message and "predict_pixels" in message
    assert "uint8 [1, 64, 64, 3]" in message and "224, 224, 3" in message


def test_modelserver_exits_with_a_readable_message_on_a_bad_warmup_file(model_base_path, tmp_path):
    bad = predict_record("classify", "images", np.array([b"x"], object))
    version = version_with_warmup(model_base_path, tmp_path / "models", [bad])
    command = [sys.executable, "-m", "services.modelserver", "--port", "0", "--metrics_port", "0"]
    command += ["--model_base_path", str(version.parent)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)]), "TAGSMITH_LOG_LEVEL": "ERROR"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("modelserver: model ") and "warm-up request 0" in last_line
    assert "signature 'classify' is not in the model" in last_line and "Traceback" not in result.stderr


def test_only_predict_logs_are_accepted(tmp_path):
    from services.modelserver.warmup import read_requests

    classify = prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=classification_pb2.ClassificationRequest())
    )
    path = tmp_path / "warmup"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(pixels_record())
        writer.write(classify.SerializeToString())
    with pytest.raises(ValueError, match="record 1 is a classify_log; only predict_log is supported"):
        read_requests(path)


def test_more_than_1000_records_or_a_corrupt_file_are_refused(tmp_path):
    from services.modelserver.warmup import MAX_RECORDS, read_requests

    path = tmp_path / "warmup"
    small = predict_record(contract.ENCODED_SIGNATURE, "images", np.array([b"x"], object))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(MAX_RECORDS + 1):
            writer.write(small)
    with pytest.raises(ValueError, match="more than 1000"):
        read_requests(path)
    path.write_bytes(b"this is not a TFRecord file at all")
    with pytest.raises(ValueError, match="not a readable TFRecord"):
        read_requests(path)
