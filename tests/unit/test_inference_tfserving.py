"""TF Serving messages without TensorFlow: nothing heavy imported, bytes identical to tensorflow_serving's."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.inference import tfserving

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_inference_service_never_imports_tensorflow():
    code = (
        "import sys, services.inference.server, services.inference.__main__; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving', 'keras')]; "
        "print(heavy)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _sample_request():
    request = tfserving.PredictRequest(output_filter=["scores"])
    request.model_spec.name = "efficientnet_lite0"
    request.model_spec.signature_name = "serving_default"
    request.model_spec.version.value = 3
    request.inputs["images"].CopyFrom(tfserving.string_tensor([b"\xff\xd8first", b"\x89PNGsecond"]))
    return request


def test_messages_serialize_like_tensorflow_serving():
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

    ours = _sample_request().SerializeToString(deterministic=True)
    theirs = predict_pb2.PredictRequest()
    theirs.ParseFromString(ours)
    assert theirs.SerializeToString(deterministic=True) == ours
    built = predict_pb2.PredictRequest(output_filter=["scores"])
    built.model_spec.name = "efficientnet_lite0"
    built.model_spec.signature_name = "serving_default"
    built.model_spec.version.value = 3
    built.inputs["images"].dtype = tfserving.DT_STRING
    built.inputs["images"].tensor_shape.dim.add(size=2)
    built.inputs["images"].string_val.extend([b"\xff\xd8first", b"\x89PNGsecond"])
    assert built.SerializeToString(deterministic=True) == ours
    for ours_cls, theirs_cls in (
        (tfserving.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest),
        (tfserving.GetModelStatusResponse, get_model_status_pb2.GetModelStatusResponse),
    ):
        assert ours_cls.DESCRIPTOR.full_name == theirs_cls.DESCRIPTOR.full_name
        assert [f.number for f in ours_cls.DESCRIPTOR.fields] == [f.number for f in theirs_cls.DESCRIPTOR.fields]


def test_responses_from_tensorflow_serving_parse():
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    scores = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    theirs = predict_pb2.PredictResponse()
    theirs.outputs["scores"].CopyFrom(tf.make_tensor_proto(scores))
    theirs.model_spec.version.value = 4
    ours = tfserving.PredictResponse.FromString(theirs.SerializeToString())
    assert np.array_equal(tfserving.to_numpy(ours.outputs["scores"]), scores)
    assert ours.model_spec.version.value == 4


def test_to_numpy_reads_typed_fields_and_fills_single_values():
    tensor = tfserving.TensorProto(dtype=tfserving.DT_INT32, int_val=[1, 2, 3, 4])
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=2)
    assert tfserving.to_numpy(tensor).tolist() == [[1, 2], [3, 4]]
    filled = tfserving.TensorProto(dtype=tfserving.DT_FLOAT, float_val=[0.5])
    filled.tensor_shape.dim.add(size=3)
    assert tfserving.to_numpy(filled).tolist() == [0.5, 0.5, 0.5]
    packed = tfserving.TensorProto(dtype=tfserving.DT_FLOAT, tensor_content=np.float32([1, 2]).tobytes())
    packed.tensor_shape.dim.add(size=2)
    assert tfserving.to_numpy(packed).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="unsupported tensor dtype"):
        tfserving.to_numpy(tfserving.string_tensor([b"x"]))


def test_method_paths():
    assert tfserving.PREDICT.path == "/tensorflow.serving.PredictionService/Predict"
    assert tfserving.GET_MODEL_METADATA.path == "/tensorflow.serving.PredictionService/GetModelMetadata"
    assert tfserving.GET_MODEL_STATUS.path == "/tensorflow.serving.ModelService/GetModelStatus"
