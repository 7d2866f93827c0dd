"""The image resource's faces: boxes in fractions of the upright image, and whether faces were analysed at all."""

from tagsmith.catalog.v1 import catalog_pb2

from services.gateway.schemas import Image, image_from


def test_faces_pass_through_as_box_and_score():
    face = catalog_pb2.Face(box=catalog_pb2.Box(x=0.25, y=0.125, width=0.5, height=0.25), score=0.75)
    image = image_from(catalog_pb2.Image(uid="u", faces=[face], faces_analysed=True))
    dumped = image.model_dump(mode="json")
    assert dumped["faces"] == [{"box": {"x": 0.25, "y": 0.125, "width": 0.5, "height": 0.25}, "score": 0.75}]
    assert dumped["faces_analysed"] is True
    assert Image.model_validate(dumped).faces[0].box.width == 0.5


def test_an_image_not_analysed_says_so():
    dumped = image_from(catalog_pb2.Image(uid="u")).model_dump(mode="json")
    assert (dumped["faces"], dumped["faces_analysed"]) == ([], False)
