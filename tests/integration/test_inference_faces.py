"""Faces beside classification: the real inference server, the real model server serving both models."""

import io

import pytest
from PIL import Image
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.common.channels import open_channel
from tests.integration.test_inference_classify import CAT_CLASSES, classify
from tests.support.images import group_photo, sample_image, sideways

# Where the astronaut's face is in scikit-image's astronaut photo (fractions of the 512x512 image): between her
# eyebrows and chin, left of the centre.
ASTRONAUT_FACE_CENTRE = (0.44, 0.25)


@pytest.fixture
async def connect(inference_server):
    async def start(**settings):
        running = await inference_server(**settings)
        channel = open_channel(f"127.0.0.1:{running.port}")
        opened.append(channel)
        return inference_pb2_grpc.InferenceServiceStub(channel)

    opened = []
    yield start
    for channel in opened:
        await channel.close()


def centre(face) -> tuple[float, float]:
    return face.box.x + face.box.width / 2, face.box.y + face.box.height / 2


def landscape_astronaut() -> bytes:
    """The astronaut cropped wider than tall (512x400), so a turned image has a different shape."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(sample_image("astronaut"))).crop((0, 0, 512, 400)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


async def test_portrait_gets_person_tags_and_a_box_on_the_face(connect, test_keys):
    reply = await classify(await connect(), test_keys, sample_image("astronaut"))
    assert reply.faces_analysed and (reply.face_model_name, reply.face_model_version) == ("face_detector", "1")
    (face,) = reply.faces
    assert {"person", "people", "portrait"} <= set(reply.tags) and "group" not in reply.tags
    x, y = centre(face)
    assert abs(x - ASTRONAUT_FACE_CENTRE[0]) < 0.05 and abs(y - ASTRONAUT_FACE_CENTRE[1]) < 0.05
    assert 0.1 < face.box.width < 0.35 and 0.1 < face.box.height < 0.35 and face.score >= 0.6
    assert reply.category == reply.labels[0].label, "the category stays the classifier's"


async def test_cat_has_no_face(connect, test_keys):
    reply = await classify(await connect(), test_keys, sample_image("chelsea"))
    assert reply.faces_analysed and not reply.faces
    assert not {"person", "people", "portrait", "group"} & set(reply.tags)
    assert reply.category in CAT_CLASSES


async def test_two_people_side_by_side_are_a_group(connect, test_keys):
    reply = await classify(await connect(), test_keys, group_photo())
    assert {"person", "people", "group"} <= set(reply.tags) and "portrait" not in reply.tags
    assert len(reply.faces) == 2
    assert sorted(centre(face)[0] < 0.5 for face in reply.faces) == [False, True], "one face in each half"


async def test_sideways_portrait_gets_its_box_in_upright_coordinates(connect, test_keys):
    stub = await connect()
    upright = await classify(stub, test_keys, landscape_astronaut())
    turned = await classify(stub, test_keys, sideways(landscape_astronaut()))
    assert (turned.orientation, turned.width, turned.height) == (6, 512, 400)
    (expected,), (face,) = upright.faces, turned.faces
    for field in ("x", "y", "width", "height"):
        assert getattr(face.box, field) == pytest.approx(getattr(expected.box, field), abs=0.02), field
    x, y = centre(face)
    assert abs(x - ASTRONAUT_FACE_CENTRE[0]) < 0.05 and abs(y - ASTRONAUT_FACE_CENTRE[1] * 512 / 400) < 0.06


async def test_detection_switched_off_says_faces_were_not_analysed(connect, test_keys):
    reply = await classify(await connect(face_model_name=""), test_keys, sample_image("astronaut"))
    assert not reply.faces_analysed and not reply.faces and not reply.face_model_name
    assert "person" not in reply.tags and reply.labels


async def test_a_missing_detector_leaves_classification_working(connect, test_keys):
    reply = await classify(await connect(face_model_name="no_such_detector"), test_keys, sample_image("astronaut"))
    assert not reply.faces_analysed and not reply.faces
    assert reply.labels and reply.category == reply.labels[0].label


async def test_a_higher_threshold_drops_weaker_faces(connect, test_keys):
    reply = await classify(await connect(face_score_threshold=0.99), test_keys, sample_image("astronaut"))
    assert reply.faces_analysed and not reply.faces and "person" not in reply.tags


async def test_get_model_names_the_face_detector_beside_the_classifier(connect):
    info = await (await connect()).GetModel(inference_pb2.GetModelRequest(), timeout=30)
    assert (info.name, info.face_model_name, info.face_model_version) == ("efficientnet_lite0", "face_detector", "1")
    off = await (await connect(face_model_name="")).GetModel(inference_pb2.GetModelRequest(), timeout=30)
    assert (off.face_model_name, off.face_model_version) == ("", "")
