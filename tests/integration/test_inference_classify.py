"""Classify, GetModel and GetLimits through a real inference server and the real model server."""

import asyncio
import io

import grpc
import pytest
from PIL import Image
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.common.channels import open_channel
from services.common.imageformats import CONTENT_TYPES
from services.common.imaging import register_openers
from services.inference import tfserving
from tests.support.images import sample_image
from tests.support.inference_fixtures import MODEL_NAME, classify_requests, stand_in_tfserving

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture
async def stub(inference_server):
    running = await inference_server()
    async with open_channel(f"127.0.0.1:{running.port}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel), running


def auth(test_keys) -> tuple:
    return (("authorization", f"Bearer {test_keys.token()}"),)


async def classify(stub, test_keys, data: bytes, **options) -> inference_pb2.ClassifyResponse:
    return await stub.Classify(iter(classify_requests(data, **options)), metadata=auth(test_keys), timeout=30)


async def test_cat_photo_is_a_cat(stub, test_keys):
    reply = await classify(stub[0], test_keys, sample_image("chelsea"))
    assert reply.category in CAT_CLASSES
    assert "cat" in reply.tags and "animal" in reply.tags
    assert len(reply.labels) == 5
    assert [p.score for p in reply.labels] == sorted((p.score for p in reply.labels), reverse=True)
    assert (reply.model_name, reply.model_version) == (MODEL_NAME, "1")
    assert (reply.format, reply.width, reply.height) == ("jpeg", 451, 300)


async def test_coffee_photo_is_coffee(stub, test_keys):
    reply = await classify(stub[0], test_keys, sample_image("coffee"), top_k=3)
    assert reply.labels[0].label in {"espresso", "cup", "coffee mug"}
    assert reply.labels[0].class_id in {967, 968, 504}
    assert len(reply.labels) == 3
    assert {"espresso", "coffee", "drink", "food"} & set(reply.tags)


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp")])
async def test_every_allowed_format(stub, test_keys, fmt, name):
    reply = await classify(stub[0], test_keys, sample_image("chelsea", fmt))
    assert reply.format == name
    assert reply.category in CAT_CLASSES


@pytest.mark.parametrize("fmt", ["WEBP", "GIF"])
async def test_animations_are_classified_by_their_first_frame(stub, test_keys, fmt):
    cat = Image.open(io.BytesIO(sample_image("chelsea"))).convert("RGB")
    coffee = Image.open(io.BytesIO(sample_image("coffee"))).convert("RGB").resize(cat.size)
    buffer = io.BytesIO()
    cat.save(buffer, fmt, save_all=True, append_images=[coffee], duration=500, loop=0)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2
    reply = await classify(stub[0], test_keys, buffer.getvalue())
    assert (reply.format, reply.width, reply.height) == (fmt.lower(), 451, 300)
    assert reply.category in CAT_CLASSES


def _sideways(data: bytes, fmt: str = "JPEG") -> bytes:
    """The photo stored turned a quarter anticlockwise, with the EXIF orientation (6) that turns it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_90).save(buffer, fmt, exif=exif, quality=95)
    return buffer.getvalue()


async def test_sideways_photo_is_classified_upright(stub, test_keys):
    upright = await classify(stub[0], test_keys, sample_image("coffee"), top_k=5)
    sideways = await classify(stub[0], test_keys, _sideways(sample_image("coffee")), top_k=5)
    assert (sideways.width, sideways.height, sideways.orientation) == (upright.width, upright.height, 6)
    assert sideways.labels[0].label == upright.labels[0].label
    thumbnail = Image.open(io.BytesIO(sideways.thumbnail))
    assert thumbnail.width > thumbnail.height and sideways.thumbnail_format == "jpeg"


@pytest.mark.parametrize(("fmt", "name"), [("HEIF", "heic"), ("AVIF", "avif")])
async def test_heic_and_avif_are_classified(stub, test_keys, fmt, name):
    register_openers()
    reply = await classify(stub[0], test_keys, sample_image("chelsea", fmt, quality=90))
    assert (reply.format, reply.width, reply.height) == (name, 451, 300)
    assert reply.category in CAT_CLASSES


async def test_classify_returns_the_thumbnail_from_the_same_decode(stub, test_keys):
    reply = await classify(stub[0], test_keys, sample_image("chelsea", "PNG"))
    thumbnail = Image.open(io.BytesIO(reply.thumbnail))
    assert (thumbnail.format, thumbnail.size, reply.thumbnail_format) == ("JPEG", (256, 170), "jpeg")


async def test_large_jpeg_is_shrunk_without_changing_the_result(stub, test_keys):
    big = Image.open(io.BytesIO(sample_image("coffee"))).resize((4000, 2660), Image.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=98)
    reply = await classify(stub[0], test_keys, buffer.getvalue(), top_k=20)
    assert (reply.width, reply.height) == (4000, 2660)
    assert len(reply.labels) == 20
    assert reply.labels[0].label in {"espresso", "cup", "coffee mug"}


def _truncated() -> bytes:
    data = sample_image("chelsea")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (classify_requests(b""), "empty"),
        (classify_requests(b"just some text, not a picture"), "not an image"),
        (classify_requests(b"II*\x00" + b"\x00" * 64), "TIFF"),
        (classify_requests(_truncated()), "truncated"),
        ([inference_pb2.ClassifyRequest(chunk=b"abc")], "options"),
        ([], "empty"),
        (classify_requests(sample_image(), top_k=21), "top_k"),
        (
            [inference_pb2.ClassifyRequest(options={}), inference_pb2.ClassifyRequest(chunk=b"x" * (1024 * 1024 + 1))],
            "1048576",
        ),
    ],
)
async def test_bad_uploads_are_invalid_argument(stub, test_keys, requests, message):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub[0].Classify(iter(requests), metadata=auth(test_keys), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


async def test_byte_and_pixel_limits(inference_server, test_keys):
    running = await inference_server(max_bytes=50_000, max_pixels=100_000)
    async with open_channel(f"127.0.0.1:{running.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await classify(stub, test_keys, sample_image("chelsea", "BMP"))
        with pytest.raises(grpc.aio.AioRpcError) as too_many_pixels:
            await classify(stub, test_keys, sample_image("coffee", quality=30))
    assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "MiB limit" in too_big.value.details()
    assert too_many_pixels.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "megapixels" in too_many_pixels.value.details()


async def test_every_rpc_needs_a_token(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub[0].GetLimits(inference_pb2.GetLimitsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_get_model_and_limits(stub, test_keys):
    model = await stub[0].GetModel(inference_pb2.GetModelRequest(), metadata=auth(test_keys))
    limits = await stub[0].GetLimits(inference_pb2.GetLimitsRequest(), metadata=auth(test_keys))
    assert (model.name, model.version, model.num_labels) == (MODEL_NAME, "1", 1000)
    assert "1000 classes" in model.description
    assert limits.max_bytes == 25 * 1024 * 1024 and limits.max_pixels == 50_000_000
    assert list(limits.content_types) == list(CONTENT_TYPES)
    assert {"image/webp", "image/heic", "image/heif", "image/avif"} <= set(limits.content_types)


async def test_cache_hit_avoids_a_second_predict(stub, test_keys):
    stub_, running = stub
    classifier = running.servicer.classifier
    first = await classify(stub_, test_keys, sample_image("coffee"))
    second = await classify(stub_, test_keys, sample_image("coffee"), top_k=10)
    assert classifier.batcher.stats.calls == 1
    assert classifier.cache.hits == 1
    assert [p.class_id for p in second.labels[:5]] == [p.class_id for p in first.labels]


async def test_concurrent_calls_share_predict_calls(stub, test_keys):
    stub_, running = stub
    images = [sample_image("chelsea", quality=q) for q in range(60, 92, 2)]
    replies = await asyncio.gather(*(classify(stub_, test_keys, data) for data in images))
    stats = running.servicer.classifier.batcher.stats
    assert all(reply.category in CAT_CLASSES for reply in replies)
    assert stats.images == len(images)
    assert stats.calls <= len(images) // 2


async def test_get_model_names_the_bundled_model_server(stub, test_keys):
    model = await stub[0].GetModel(inference_pb2.GetModelRequest(), metadata=auth(test_keys))
    assert "served by the Tagsmith model server (services.modelserver on TensorFlow 2." in model.description
    assert "TensorFlow Serving" not in model.description


@pytest.fixture
async def unnamed_model_server(modelserver_addr):
    """A stand-in for TF Serving: the model server's own GetModelMetadata answers, without the header that names it
    (TF Serving sends none)."""
    upstream = grpc.aio.insecure_channel(modelserver_addr)
    forward = tfserving.GET_MODEL_METADATA.callable(upstream)

    async def metadata(request, context):
        return await forward(request, timeout=10)

    async with stand_in_tfserving({tfserving.GET_MODEL_METADATA: metadata}) as address:
        yield address
    await upstream.close()


async def test_get_model_says_tensorflow_serving_when_the_server_does_not_name_itself(
    inference_server, unnamed_model_server, test_keys
):
    running = await inference_server(tfserving_addr=unnamed_model_server, face_model_name="")
    async with open_channel(f"127.0.0.1:{running.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        model = await stub.GetModel(inference_pb2.GetModelRequest(), metadata=auth(test_keys))
    assert f"ImageNet classifier '{MODEL_NAME}' served by TensorFlow Serving: 1000 classes" in model.description
    assert "Tagsmith model server" not in model.description


async def test_a_model_without_the_embedding_output_still_classifies(stub, inference_server, test_keys):
    """A model built before embeddings: the first call learns that the output is missing, later calls no longer ask."""
    assert len((await classify(stub[0], test_keys, sample_image("chelsea"))).embedding) > 0
    running = await inference_server(embedding_output="not_an_output")
    async with open_channel(f"127.0.0.1:{running.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        cat = await classify(stub, test_keys, sample_image("chelsea"))
        coffee = await classify(stub, test_keys, sample_image("coffee"))
    assert cat.category in CAT_CLASSES and not cat.embedding
    assert coffee.labels[0].class_id in {967, 968, 504} and not coffee.embedding
    assert running.servicer.classifier.batcher.stats.calls == 2
