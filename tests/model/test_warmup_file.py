"""The SavedModel's TF Serving warm-up file, and that the build is reproducible with it."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2
from tensorflow_serving.apis import prediction_log_pb2

from model import build, warmup
from services.common import model_contract as contract

REPO = Path(__file__).resolve().parents[2]


def test_warmup_file_holds_predict_requests_for_both_signatures(model_dir):
    path = model_dir / contract.WARMUP_FILE
    assert path.is_file()
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    logs = [prediction_log_pb2.PredictionLog.FromString(record) for record in records]
    assert 0 < len(logs) <= 1000  # TF Serving refuses more
    assert {entry.WhichOneof("log_type") for entry in logs} == {"predict_log"}
    requests = warmup.read_requests(model_dir)
    assert {r.model_spec.signature_name for r in requests} == {contract.ENCODED_SIGNATURE, contract.PIXELS_SIGNATURE}
    assert {r.model_spec.name for r in requests} == {build.MODEL_NAME}
    pixel_batches = [
        tf.make_ndarray(r.inputs[contract.PIXELS_INPUT]).shape[0]
        for r in requests
        if r.model_spec.signature_name == contract.PIXELS_SIGNATURE
    ]
    assert pixel_batches == list(warmup.PIXEL_BATCH_SIZES)


def test_every_warmup_request_runs_on_the_saved_model(loaded, model_dir):
    for request in warmup.read_requests(model_dir):
        inputs = {key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**inputs)
        size = len(next(iter(inputs.values())))
        assert out[contract.SCORES_OUTPUT].shape == (size, contract.NUM_CLASSES)
        np.testing.assert_allclose(out[contract.SCORES_OUTPUT].numpy().sum(axis=1), 1.0, atol=1e-4)


def file_digests(version_dir) -> dict[str, str]:
    return {
        str(path.relative_to(version_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(version_dir.rglob("*"))
        if path.is_file()
    }


@pytest.mark.timeout(900)  # a build: up to a few minutes when the machine is busy
def test_a_rebuild_is_byte_identical_but_for_the_fingerprint_uuid_and_replaces_the_output(model_dir, tmp_path):
    output = tmp_path / build.MODEL_NAME / build.MODEL_VERSION
    output.mkdir(parents=True)
    (output / "stale.txt").write_text("an older build's file")
    # In its own process, as `make model` runs it: within one process TensorFlow numbers its functions on.
    subprocess.run([sys.executable, "-m", "model.build", "--output", str(output)], check=True, cwd=REPO)
    assert not (output / "stale.txt").exists()
    assert [p.name for p in output.parent.iterdir()] == [build.MODEL_VERSION]  # no temporary directory left

    digests = file_digests(model_dir)
    assert contract.WARMUP_FILE in digests and "saved_model.pb" in digests
    # TensorFlow writes a random uuid into fingerprint.pb on every save; the hashes of the model in it must match.
    digests.pop("fingerprint.pb")
    rebuilt = file_digests(output)
    rebuilt.pop("fingerprint.pb")
    assert digests == rebuilt, f"{model_dir} differs from a fresh build (built from older code? run `make model`)"
    hashes = [
        fingerprint_pb2.FingerprintDef.FromString((d / "fingerprint.pb").read_bytes()) for d in (model_dir, output)
    ]
    for entry in hashes:
        entry.ClearField("uuid")
    assert hashes[0] == hashes[1]
