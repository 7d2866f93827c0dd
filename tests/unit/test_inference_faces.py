"""The face detector's letterboxed input, boxes mapped back to the upright image, and the face tag rules."""

import numpy as np
import pytest
from PIL import Image

from services.inference.faces import Face, unletterbox
from services.inference.pixels import Letterbox, letterbox
from services.inference.taxonomy import face_tags


def face(width: float, score: float = 0.9) -> Face:
    return Face(x=0.1, y=0.1, width=width, height=width, score=score)


@pytest.mark.parametrize(
    ("size", "placed"), [((400, 200), Letterbox(0, 48, 192, 96)), ((100, 300), Letterbox(64, 0, 64, 192))]
)
def test_letterbox_centres_the_image_on_black(size, placed):
    pixels, where = letterbox(Image.new("RGB", size, (200, 100, 50)))
    assert where == placed
    square = np.frombuffer(pixels, np.uint8).reshape(192, 192, 3)
    assert square[placed.top + placed.height // 2, placed.left + placed.width // 2].tolist() == [200, 100, 50]
    assert square[0, 0].tolist() == [0, 0, 0]


def test_a_box_in_the_input_maps_back_to_fractions_of_the_image():
    placed = Letterbox(left=0, top=48, width=192, height=96)
    # The whole image in the input: x 0..192, y 48..144.
    mapped = unletterbox(np.array([0.25, 48 / 192, 0.75, 144 / 192]), 0.8, placed)
    assert (mapped.x, mapped.y, mapped.width, mapped.height) == pytest.approx((0.25, 0.0, 0.5, 1.0))
    clipped = unletterbox(np.array([-0.1, 0.0, 0.5, 0.5]), 0.8, placed)
    assert (clipped.x, clipped.y) == (0.0, 0.0) and clipped.score == pytest.approx(0.8)


def test_face_tags():
    assert face_tags([]) == []
    assert face_tags([face(0.2)]) == ["person", "people", "portrait"]
    assert face_tags([face(0.4), face(0.1)]) == ["person", "people", "portrait"], "one face 16 times larger dominates"
    assert face_tags([face(0.2), face(0.18)]) == ["person", "people", "group"]
    assert face_tags([face(0.2), face(0.15), face(0.05)]) == ["person", "people", "group"]
