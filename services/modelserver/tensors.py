"""Predict inputs and outputs: TensorProto to numpy and back, checked against the signature like TF Serving does."""

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from services.common.errors import StatusError
from services.modelserver.models import Signature


def _invalid(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _dtype_name(enum_value: int) -> str:
    try:
        return tf.dtypes.as_dtype(enum_value).name
    except TypeError:
        return f"unknown dtype {enum_value}"


def _check_keys(sent: set[str], signature: Signature) -> None:
    expected = set(signature.inputs)
    if sent != expected:
        raise _invalid(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({sorted(sent)}) != len({sorted(expected)}). Sent extra: {sorted(sent - expected)}. "
            f"Missing but required: {sorted(expected - sent)}."
        )


def decode_inputs(inputs: dict[str, tensor_pb2.TensorProto], signature: Signature) -> dict[str, np.ndarray]:
    """Numpy arrays for the request's inputs; INVALID_ARGUMENT for a wrong key, dtype, shape or malformed tensor."""
    _check_keys(set(inputs), signature)
    arrays = {}
    for position, key in enumerate(sorted(inputs)):
        proto, spec = inputs[key], signature.inputs[key]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise _invalid(
                f"Expects arg[{position}] ('{key}') to be {spec.dtype.name} but {_dtype_name(proto.dtype)} is provided"
            )
        try:
            array = tf.make_ndarray(proto)
        except Exception as exc:
            raise _invalid(f"input '{key}' is not a well-formed tensor: {exc}") from None
        if not spec.shape.is_compatible_with(array.shape):
            raise _invalid(f"input '{key}' has shape {list(array.shape)}, the signature expects {spec.shape}")
        arrays[key] = array
    return arrays


def output_keys(output_filter: list[str], signature: Signature) -> tuple[str, ...]:
    """The outputs to return: the filter if given (each must exist), else every output."""
    for key in output_filter:
        if key not in signature.outputs:
            raise _invalid(
                f"output tensor alias not found in signature: {key} Outputs expected to be in the set "
                f"{{{','.join(signature.outputs)}}}."
            )
    return tuple(dict.fromkeys(output_filter)) or signature.outputs


def batch_size(arrays: dict[str, np.ndarray]) -> int | None:
    """The shared first dimension of every input, or None when the inputs cannot join a batch."""
    sizes = {array.shape[0] if array.ndim else None for array in arrays.values()}
    size = sizes.pop() if len(sizes) == 1 else None
    return size if size is not None and size > 0 else None


def encode(array: np.ndarray) -> tensor_pb2.TensorProto:
    return tf.make_tensor_proto(array)
