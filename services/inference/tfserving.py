"""TensorFlow Serving's gRPC messages and methods, built from captured descriptors so TensorFlow is never imported."""

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor

from services.common.rpc_names import method_path

DESCRIPTORS_FILE = "tfserving_descriptors.binpb"

# tensorflow.DataType values (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_STRING, DT_INT64 = 1, 2, 3, 4, 7, 9
_NUMPY_DTYPES = {DT_FLOAT: "<f4", DT_DOUBLE: "<f8", DT_INT32: "<i4", DT_INT64: "<i8"}
_REPEATED_FIELDS = {DT_FLOAT: "float_val", DT_DOUBLE: "double_val", DT_INT32: "int_val", DT_INT64: "int64_val"}


def find_descriptors() -> Path:
    """The captured FileDescriptorSet, looked up on sys.path (`make protos` writes it to gen/)."""
    for entry in sys.path:
        candidate = Path(entry or ".") / DESCRIPTORS_FILE
        if candidate.is_file():
            return candidate
    raise RuntimeError(f"{DESCRIPTORS_FILE} not found on sys.path; run `make protos` to generate it into gen/")


def _load_pool(path: Path) -> descriptor_pool.DescriptorPool:
    # A private pool: the same file names can then live beside real TensorFlow in one process.
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
        pool.Add(file)
    return pool


_POOL = _load_pool(find_descriptors())


# The message classes are built at run time from the captured descriptors, so a checker cannot know their fields:
# they and their instances are typed Any.
def _message(full_name: str) -> type[Any]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


TensorProto = _message("tensorflow.TensorProto")
TensorShapeProto = _message("tensorflow.TensorShapeProto")
SignatureDefMap = _message("tensorflow.serving.SignatureDefMap")
ModelSpec = _message("tensorflow.serving.ModelSpec")
PredictRequest = _message("tensorflow.serving.PredictRequest")
PredictResponse = _message("tensorflow.serving.PredictResponse")
GetModelMetadataRequest = _message("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = _message("tensorflow.serving.GetModelMetadataResponse")
GetModelStatusRequest = _message("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = _message("tensorflow.serving.GetModelStatusResponse")


@dataclass(frozen=True)
class Method:
    """One TF Serving RPC: its path and message classes."""

    path: str
    request: type[Any]
    response: type[Any]

    def callable(self, channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        """The method bound to `channel`, ready to `await call(request, timeout=...)`."""
        return channel.unary_unary(
            self.path, request_serializer=self.request.SerializeToString, response_deserializer=self.response.FromString
        )


def _service(file_name: str, name: str) -> ServiceDescriptor:
    return _POOL.FindFileByName(f"tensorflow_serving/apis/{file_name}").services_by_name[name]


def _method(service: ServiceDescriptor, name: str) -> Method:
    method = service.methods_by_name[name]
    request, response = (message_factory.GetMessageClass(t) for t in (method.input_type, method.output_type))
    return Method(method_path(service, name), request, response)


_PREDICTION_SERVICE = _service("prediction_service.proto", "PredictionService")
PREDICTION_SERVICE = _PREDICTION_SERVICE.full_name
PREDICT = _method(_PREDICTION_SERVICE, "Predict")
GET_MODEL_METADATA = _method(_PREDICTION_SERVICE, "GetModelMetadata")
GET_MODEL_STATUS = _method(_service("model_service.proto", "ModelService"), "GetModelStatus")


def string_tensor(values: Sequence[bytes]) -> Any:
    """A rank-1 DT_STRING TensorProto holding `values`."""
    tensor = TensorProto(dtype=DT_STRING, string_val=list(values))
    tensor.tensor_shape.dim.add(size=len(values))
    return tensor


def uint8_tensor(content: bytes, shape: Sequence[int]) -> Any:
    """A DT_UINT8 TensorProto of `shape` whose row-major values are `content`."""
    tensor = TensorProto(dtype=DT_UINT8, tensor_content=content)
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    return tensor


def tensor_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(dim.size for dim in tensor.tensor_shape.dim)


def to_numpy(tensor: Any) -> np.ndarray:
    """A float/double/int32/int64 TensorProto as a numpy array, from tensor_content or else the typed repeated field."""
    if tensor.dtype not in _NUMPY_DTYPES:
        raise ValueError(f"unsupported tensor dtype {tensor.dtype}")
    shape = tensor_shape(tensor)
    dtype = np.dtype(_NUMPY_DTYPES[tensor.dtype])
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape)
    values = np.asarray(getattr(tensor, _REPEATED_FIELDS[tensor.dtype]), dtype=dtype)
    size = int(np.prod(shape, dtype=np.int64))
    if values.size == 1 and size > 1:
        # TensorProto's rule: a single value fills the whole tensor.
        values = np.full(size, values[0], dtype=dtype)
    return values.reshape(shape)
