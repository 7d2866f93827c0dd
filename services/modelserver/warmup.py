"""TF Serving's SavedModel warm-up: the requests in assets.extra/tf_serving_warmup_requests run once at load.

The file is a TFRecord of PredictionLog messages (tensorflow.org/tfx/serving/saved_model_warmup). The first call of
each signature pays for graph optimisation and kernel set-up; running the logged requests before the version is
reported AVAILABLE moves that cost out of the first real requests. As in TF Serving, a request that fails makes the
version fail to load, and a file of more than 1000 records is refused.
"""

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from services.common.model_contract import WARMUP_FILE

log = logging.getLogger(__name__)

MAX_RECORDS = 1000
DEFAULT_SIGNATURE = "serving_default"


def read_requests(path: Path) -> list[predict_pb2.PredictRequest]:
    """The PredictRequests logged in a warm-up file; ValueError for other log types, too many records or bad data."""
    requests = []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            if index >= MAX_RECORDS:
                raise ValueError(f"{path} holds more than {MAX_RECORDS} warm-up records")
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            kind = entry.WhichOneof("log_type")
            if kind != "predict_log":
                raise ValueError(f"{path}: warm-up record {index} is a {kind}; only predict_log is supported")
            requests.append(entry.predict_log.request)
    except tf.errors.OpError as exc:
        raise ValueError(f"{path} is not a readable TFRecord file: {exc.message}") from None
    return requests


def run_request(signatures: Mapping, request: predict_pb2.PredictRequest) -> None:
    """Runs one logged request on its signature; raises ValueError saying what does not match."""
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    if name not in signatures:
        raise ValueError(f"signature {name!r} is not in the model (it has {sorted(signatures)})")
    signature = signatures[name]
    if set(request.inputs) != set(signature.inputs):
        raise ValueError(f"inputs {sorted(request.inputs)} do not match {name!r}'s {sorted(signature.inputs)}")
    inputs = {key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}
    for key, array in inputs.items():
        spec = signature.inputs[key]
        if tf.as_dtype(array.dtype) != spec.dtype or not spec.shape.is_compatible_with(array.shape):
            raise ValueError(
                f"input {key!r} is {tf.as_dtype(array.dtype).name} {list(array.shape)}; signature {name!r} "
                f"takes {spec.dtype.name} {spec.shape}"
            )
    try:
        signature.run(inputs)
    except tf.errors.OpError as exc:
        # Imported here: batching imports models, which imports this module.
        from services.modelserver.batching import concise_message

        raise ValueError(f"signature {name!r} failed: {concise_message(exc.message)}") from None


def warm_up(version_dir: Path, signatures: Mapping) -> int:
    """Runs the version's warm-up requests, if it ships any; returns how many ran."""
    path = version_dir / WARMUP_FILE
    if not path.is_file():
        return 0
    start = time.monotonic()
    requests = read_requests(path)
    for index, request in enumerate(requests):
        try:
            run_request(signatures, request)
        except ValueError as exc:
            raise ValueError(f"{path}: warm-up request {index}: {exc}") from None
    log.info("ran %d warm-up requests from %s in %.2fs", len(requests), path, time.monotonic() - start)
    return len(requests)
