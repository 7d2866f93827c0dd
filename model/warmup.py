"""TF Serving's warm-up file: PredictRequests for both signatures, run by the server before a version is AVAILABLE."""

# Format (tensorflow.org/tfx/serving/saved_model_warmup): assets.extra/tf_serving_warmup_requests is a TFRecord
# file of PredictionLog messages, at most 1000 records. The requests are built from synthetic images encoded by
# TensorFlow itself, so the file is byte-identical on every build.

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from services.common.model_contract import (
    ENCODED_INPUT,
    ENCODED_SIGNATURE,
    IMAGE_SIZE,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    WARMUP_FILE,
)

# The first call of each path costs a graph optimisation and kernel set-up: JPEGs that take each DCT scale of the
# in-graph decode (1/1, 1/2, 1/4, 1/8: a 12-MP phone photo takes 1/8), a PNG (generic decode and box shrink), and
# one image of pixels. A record with 8 images of pixels (1.2 MB) did not make the first batch of 8 any faster.
JPEG_SIZES = ((240, 320), (480, 640), (960, 1280), (1800, 2400))
PNG_SIZE = (480, 640)
PIXEL_BATCH_SIZES = (1,)


def synthetic_photo(height: int, width: int) -> np.ndarray:
    """uint8 [height, width, 3]: smooth gradients with edges, deterministic, compresses like a photo."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 255 * x / max(width - 1, 1)
    green = 255 * y / max(height - 1, 1)
    blue = 127.5 + 127.5 * np.sin(x / 37.0) * np.cos(y / 23.0)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def _request(signature: str, model_name: str, key: str, array: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
    return request


def requests(model_name: str) -> list[predict_pb2.PredictRequest]:
    files = [tf.io.encode_jpeg(synthetic_photo(*size), quality=90).numpy() for size in JPEG_SIZES]
    files.append(tf.io.encode_png(synthetic_photo(*PNG_SIZE)).numpy())
    pixels = synthetic_photo(IMAGE_SIZE, IMAGE_SIZE)
    encoded = [_request(ENCODED_SIGNATURE, model_name, ENCODED_INPUT, np.array([data], object)) for data in files]
    batches = [
        _request(PIXELS_SIGNATURE, model_name, PIXELS_INPUT, np.repeat(pixels[None], size, axis=0))
        for size in PIXEL_BATCH_SIZES
    ]
    return encoded + batches


def write_requests(export_dir: Path, model_name: str) -> Path:
    """Writes the warm-up file into the version directory export_dir and returns its path."""
    path = export_dir / WARMUP_FILE
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests(model_name):
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString(deterministic=True))
    return path


def read_requests(export_dir: Path) -> list[predict_pb2.PredictRequest]:
    """The PredictRequests of export_dir's warm-up file, in order; ValueError for any other kind of log."""
    found = []
    for index, record in enumerate(tf.data.TFRecordDataset(str(export_dir / WARMUP_FILE)).as_numpy_iterator()):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"warm-up record {index} is a {log.WhichOneof('log_type')}, not a predict_log")
        found.append(log.predict_log.request)
    return found
