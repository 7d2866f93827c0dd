"""The model server answers TF Serving's gRPC API like TF Serving: Predict, GetModelMetadata, GetModelStatus."""

import asyncio
import io

import grpc
import numpy as np
import pytest
from PIL import Image

from services.common import model_contract as contract
from services.inference import tfserving
from tests.support.images import sample_image
from tests.support.inference_fixtures import MODEL_NAME

ESPRESSO = 967
DT_UINT8 = 4  # tensorflow.DataType


@pytest.fixture
async def channel(modelserver_addr):
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(modelserver_addr, options=options) as channel:
        yield channel


def predict_request(images, *, name=MODEL_NAME, version=None, key="images", **fields):
    request = tfserving.PredictRequest(**fields)
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[key].CopyFrom(tfserving.string_tensor(images))
    return request


def uint8_tensor(array: np.ndarray):
    """A DT_UINT8 TensorProto packed in tensor_content, as TF Serving clients send pixels."""
    tensor = tfserving.TensorProto(dtype=DT_UINT8, tensor_content=np.ascontiguousarray(array, np.uint8).tobytes())
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    return tensor


def model_pixels(name: str) -> np.ndarray:
    from services.inference.pixels import to_model_pixels

    return to_model_pixels(Image.open(io.BytesIO(sample_image(name, "PNG"))))


def pixels_request(array: np.ndarray, **fields):
    request = tfserving.PredictRequest(**fields)
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = contract.PIXELS_SIGNATURE
    request.inputs[contract.PIXELS_INPUT].CopyFrom(uint8_tensor(array))
    return request


async def predict(channel, request):
    return await tfserving.PREDICT.callable(channel)(request, timeout=30)


async def expect_error(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    return err.value.details()


async def test_predict_classifies_a_batch(channel):
    images = [sample_image("coffee"), sample_image("chelsea", "PNG")]
    reply = await predict(channel, predict_request(images))
    scores = tfserving.to_numpy(reply.outputs["scores"])
    top = tfserving.to_numpy(reply.outputs["top_k_classes"])
    assert scores.shape == (2, 1000) and np.allclose(scores.sum(axis=1), 1, atol=1e-3)
    assert top[0, 0] == ESPRESSO and scores[0].argmax() == ESPRESSO
    assert 281 <= top[1, 0] <= 285
    assert (reply.model_spec.name, reply.model_spec.version.value) == (MODEL_NAME, 1)
    assert reply.model_spec.signature_name == "serving_default"


async def test_predict_pixels_classifies_a_batch_like_serving_default(channel):
    names = ["coffee", "chelsea"]
    reply = await predict(channel, pixels_request(np.stack([model_pixels(name) for name in names])))
    assert reply.model_spec.signature_name == contract.PIXELS_SIGNATURE
    assert set(reply.outputs) == {"scores", "top_k_scores", "top_k_classes", "embedding"}
    encoded = await predict(channel, predict_request([sample_image(name, "PNG") for name in names]))
    for key in reply.outputs:
        assert reply.outputs[key].dtype == encoded.outputs[key].dtype
        assert tfserving.tensor_shape(reply.outputs[key]) == tfserving.tensor_shape(encoded.outputs[key])
    top = tfserving.to_numpy(reply.outputs["top_k_classes"])
    encoded_top = tfserving.to_numpy(encoded.outputs["top_k_classes"])
    assert top[0, 0] == ESPRESSO and 281 <= top[1, 0] <= 285  # chelsea: tabby and Egyptian cat nearly tie
    assert all(len(set(a) & set(b)) >= 4 for a, b in zip(top, encoded_top, strict=True))
    scores = tfserving.to_numpy(reply.outputs["scores"])
    np.testing.assert_allclose(scores, tfserving.to_numpy(encoded.outputs["scores"]), atol=0.08)


async def test_concurrent_calls_on_both_signatures_each_get_their_own_answer(channel):
    pixels = [predict(channel, pixels_request(model_pixels("coffee")[None])) for _ in range(4)]
    encoded = [predict(channel, predict_request([sample_image("chelsea")])) for _ in range(4)]
    replies = await asyncio.gather(*pixels, *encoded)
    tops = [tfserving.to_numpy(reply.outputs["top_k_classes"])[0, 0] for reply in replies]
    assert tops[:4] == [ESPRESSO] * 4 and all(281 <= top <= 285 for top in tops[4:])


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (tfserving.TensorProto(dtype=tfserving.DT_FLOAT, float_val=[0.0] * 224 * 224 * 3), "to be uint8 but float"),
        (uint8_tensor(np.zeros((1, 256, 256, 3), np.uint8)), "shape"),
        (uint8_tensor(np.zeros((224, 224, 3), np.uint8)), "shape"),
    ],
    ids=["float pixels", "wrong size", "no batch dimension"],
)
async def test_bad_pixels_are_invalid_argument(channel, tensor, fragment):
    request = pixels_request(np.zeros((1, 224, 224, 3), np.uint8))
    if tensor.dtype == tfserving.DT_FLOAT:
        for size in (1, 224, 224, 3):
            tensor.tensor_shape.dim.add(size=size)
    request.inputs[contract.PIXELS_INPUT].CopyFrom(tensor)
    details = await expect_error(predict(channel, request), grpc.StatusCode.INVALID_ARGUMENT)
    assert fragment in details


async def test_output_filter_returns_only_the_named_outputs(channel):
    reply = await predict(channel, predict_request([sample_image("coffee")], output_filter=["top_k_scores"]))
    assert set(reply.outputs) == {"top_k_scores"}
    assert reply.outputs["top_k_scores"].tensor_content  # packed like TF Serving, not float_val


async def test_unknown_model_and_version_are_not_found(channel):
    image = [sample_image()]
    missing_model = await expect_error(predict(channel, predict_request(image, name="nope")), grpc.StatusCode.NOT_FOUND)
    await expect_error(predict(channel, predict_request(image, version=7)), grpc.StatusCode.NOT_FOUND)
    assert "nope" in missing_model
    reply = await predict(channel, predict_request(image, version=1))
    assert reply.model_spec.version.value == 1


def _float_tensor():
    tensor = tfserving.TensorProto(dtype=tfserving.DT_FLOAT, float_val=[1.0])
    tensor.tensor_shape.dim.add(size=1)
    return tensor


def _matrix_tensor():
    tensor = tfserving.TensorProto(dtype=tfserving.DT_STRING, string_val=[b"a", b"b"])
    tensor.tensor_shape.dim.add(size=1)
    tensor.tensor_shape.dim.add(size=2)
    return tensor


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r.inputs["pictures"].CopyFrom(r.inputs.pop("images")), "input size does not match"),
        (lambda r: r.inputs["images"].CopyFrom(_float_tensor()), "to be string but float"),
        (lambda r: r.inputs["images"].CopyFrom(_matrix_tensor()), "shape"),
        (lambda r: r.inputs["images"].CopyFrom(tfserving.string_tensor([b"not an image"])), "image"),
        (lambda r: r.output_filter.append("logits"), "output tensor alias not found"),
    ],
)
async def test_bad_inputs_are_invalid_argument(channel, mutate, fragment):
    request = predict_request([sample_image()])
    mutate(request)
    details = await expect_error(predict(channel, request), grpc.StatusCode.INVALID_ARGUMENT)
    assert fragment in details
    assert "Traceback" not in details and "[[" not in details


async def test_unknown_signature_is_failed_precondition(channel):
    request = predict_request([sample_image()])
    request.model_spec.signature_name = "classify"
    assert "classify" in await expect_error(predict(channel, request), grpc.StatusCode.FAILED_PRECONDITION)


async def test_get_model_metadata_lists_signature_defs(channel):
    request = tfserving.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME
    reply = await tfserving.GET_MODEL_METADATA.callable(channel)(request, timeout=10)
    assert reply.metadata["signature_def"].type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = tfserving.SignatureDefMap.FromString(reply.metadata["signature_def"].value).signature_def
    serving = signatures["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert serving.inputs["images"].dtype == tfserving.DT_STRING
    assert [d.size for d in serving.inputs["images"].tensor_shape.dim] == [-1]
    assert [d.size for d in serving.outputs["scores"].tensor_shape.dim] == [-1, 1000]
    pixels = signatures[contract.PIXELS_SIGNATURE]
    assert pixels.method_name == "tensorflow/serving/predict"
    assert list(pixels.inputs) == [contract.PIXELS_INPUT]
    assert pixels.inputs[contract.PIXELS_INPUT].dtype == DT_UINT8
    size = contract.IMAGE_SIZE
    assert [d.size for d in pixels.inputs[contract.PIXELS_INPUT].tensor_shape.dim] == [-1, size, size, 3]
    for key, output in serving.outputs.items():
        assert (pixels.outputs[key].dtype, pixels.outputs[key].tensor_shape) == (output.dtype, output.tensor_shape)
    assert (reply.model_spec.name, reply.model_spec.version.value) == (MODEL_NAME, 1)


async def test_get_model_metadata_needs_a_supported_field(channel):
    call = tfserving.GET_MODEL_METADATA.callable(channel)
    spec = tfserving.ModelSpec(name=MODEL_NAME)
    await expect_error(call(tfserving.GetModelMetadataRequest(model_spec=spec)), grpc.StatusCode.INVALID_ARGUMENT)
    bad_field = tfserving.GetModelMetadataRequest(model_spec=spec, metadata_field=["graph"])
    await expect_error(call(bad_field), grpc.StatusCode.INVALID_ARGUMENT)


async def test_get_model_status(channel):
    call = tfserving.GET_MODEL_STATUS.callable(channel)
    reply = await call(tfserving.GetModelStatusRequest(model_spec=tfserving.ModelSpec(name=MODEL_NAME)), timeout=10)
    [status] = reply.model_version_status
    assert (status.version, status.state, status.status.error_code) == (1, 30, 0)  # 30 = AVAILABLE, 0 = OK
    unknown_version = tfserving.GetModelStatusRequest(model_spec=tfserving.ModelSpec(name=MODEL_NAME))
    unknown_version.model_spec.version.value = 9
    await expect_error(call(unknown_version), grpc.StatusCode.NOT_FOUND)
    unknown_model = tfserving.GetModelStatusRequest(model_spec=tfserving.ModelSpec(name="nope"))
    await expect_error(call(unknown_model), grpc.StatusCode.NOT_FOUND)
