"""predict_pixels against serving_default: the contract, and agreement on real photos preprocessed by Pillow."""

import io

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from model.preprocess import Preprocessing, center_crop, decode, shrink
from services.common import model_contract as contract
from services.inference.pixels import to_model_pixels

# Real photos of skimage.data, each seen as stored, turned, cropped off-centre and enlarged like a phone photo.
PHOTOS = {
    "astronaut": skimage.data.astronaut,
    "chelsea": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
    "camera": skimage.data.camera,
    "hubble": skimage.data.hubble_deep_field,
    "ihc": skimage.data.immunohistochemistry,
    "retina": skimage.data.retina,
    "motorcycle": lambda: skimage.data.stereo_motorcycle()[0],
}
# Big enough to be decoded at 1/8, as a 12-MP phone photo is, and quicker to make on a busy machine.
PHONE_SIZE = (2400, 1800)

# Measured on these 81 views (see model/README.md): max |score difference| 0.042, top-1 different on 2 views
# (margins 0.031 and 0.007 between the first two classes); top-5 sets share at least 4 classes.
MAX_SCORE_DIFFERENCE = 0.08
MIN_TOP5_OVERLAP = 4
MAX_TOP1_CHANGES = 3
NEAR_TIE = 0.1  # a top-1 may change only where serving_default's first two scores are this close


def views(array: np.ndarray):
    """(name, image) for the photo as stored, turned, and two off-centre crops."""
    image = Image.fromarray(array).convert("RGB")
    width, height = image.size
    yield "stored", image
    yield "turned", image.transpose(Image.Transpose.ROTATE_90)
    yield "top-left crop", image.crop((0, 0, int(width * 0.8), int(height * 0.8)))
    yield "bottom-right crop", image.crop((int(width * 0.3), int(height * 0.3), width, height))


def phone_photo(array: np.ndarray, seed: int) -> Image.Image:
    """The photo enlarged to PHONE_SIZE with sensor-like noise, so its JPEG compresses like a camera's."""
    size = PHONE_SIZE if array.shape[1] >= array.shape[0] else PHONE_SIZE[::-1]
    big = np.asarray(Image.fromarray(array).convert("RGB").resize(size, Image.Resampling.BICUBIC), np.float32)
    big += np.random.default_rng(seed).standard_normal(big.shape, dtype=np.float32) * 3
    return Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def pillow_pixels(data: bytes) -> np.ndarray:
    """Decodes as the inference service does: JPEG at the smallest DCT scale keeping both sides >= the input size."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (contract.IMAGE_SIZE, contract.IMAGE_SIZE))
        return to_model_pixels(image)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    found = {}
    for index, (name, load) in enumerate(PHOTOS.items()):
        array = load()
        for view, image in views(array):
            for fmt in ("PNG", "JPEG"):
                found[f"{name} {view} {fmt}"] = encode(image, fmt)
        found[f"{name} phone JPEG"] = encode(phone_photo(array, index), "JPEG")
    return found


@pytest.fixture(scope="module")
def pixels(loaded):
    return loaded.signatures[contract.PIXELS_SIGNATURE]


def outputs(function, **inputs) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in function(**inputs).items()}


def test_pixel_signature_contract(pixels, serve):
    (key, spec), *others = pixels.structured_input_signature[1].items()
    assert not others and key == contract.PIXELS_INPUT
    assert spec.dtype == tf.uint8
    assert spec.shape.as_list() == [None, contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3]
    expected = {key: (t.dtype, t.shape.as_list()) for key, t in serve.structured_outputs.items()}
    assert {key: (t.dtype, t.shape.as_list()) for key, t in pixels.structured_outputs.items()} == expected
    assert set(expected) == {contract.SCORES_OUTPUT, contract.TOP_K_SCORES_OUTPUT, contract.TOP_K_CLASSES_OUTPUT}
    assert expected[contract.TOP_K_CLASSES_OUTPUT] == (tf.int32, [None, contract.TOP_K])


def test_pixel_signature_empty_batch(pixels):
    out = outputs(pixels, pixels=tf.zeros([0, contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3], tf.uint8))
    assert out[contract.SCORES_OUTPUT].shape == (0, contract.NUM_CLASSES)
    assert out[contract.TOP_K_CLASSES_OUTPUT].shape == (0, contract.TOP_K)


def test_pixel_signature_rejects_other_sizes(pixels):
    with pytest.raises(tf.errors.InvalidArgumentError, match="224"):
        pixels(pixels=tf.zeros([1, 256, 256, 3], tf.uint8))


def test_pixels_match_the_graph_resize_on_lossless_files():
    """Same decoded pixels in: Pillow's side differs from the graph's float resize by rounding (and box edges)."""
    config = Preprocessing()
    for name in ("chelsea", "coffee", "astronaut", "retina"):
        array = PHOTOS[name]()
        data = encode(Image.fromarray(array), "PNG")
        graph = shrink(decode(data, config), config.min_decoded_side)
        graph = tf.image.resize(center_crop(graph, 1.0), [contract.IMAGE_SIZE] * 2, method="bicubic").numpy()
        difference = np.abs(pillow_pixels(data) - np.clip(graph, 0, 255))
        assert difference.mean() < 0.6, name
        assert np.percentile(difference, 99) < 2.5, name


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_to_model_pixels_any_mode_and_small_images(mode):
    image = Image.fromarray(skimage.data.chelsea()).convert(mode).resize((150, 100))
    result = to_model_pixels(image)
    assert result.dtype == np.uint8 and result.shape == (contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3)


def test_signatures_agree_on_real_photos(serve, pixels, files):
    names = list(files)
    reference = outputs(serve, images=tf.constant([files[name] for name in names]))
    ours = outputs(pixels, pixels=tf.constant(np.stack([pillow_pixels(files[name]) for name in names])))
    differences = np.abs(ours[contract.SCORES_OUTPUT] - reference[contract.SCORES_OUTPUT]).max(axis=1)
    top5 = [set(a) & set(b) for a, b in zip(ours["top_k_classes"], reference["top_k_classes"], strict=True)]
    changed = [i for i in range(len(names)) if ours["top_k_classes"][i, 0] != reference["top_k_classes"][i, 0]]
    margins = reference["top_k_scores"][:, 0] - reference["top_k_scores"][:, 1]
    print(
        f"{len(names)} views: max |score difference| {differences.max():.3f} (median {np.median(differences):.4f}), "
        f"top-1 changed on {[names[i] for i in changed]} (margins {[round(float(margins[i]), 3) for i in changed]}), "
        f"smallest top-5 overlap {min(map(len, top5))}, mean {np.mean(list(map(len, top5))):.2f}"
    )
    assert differences.max() <= MAX_SCORE_DIFFERENCE
    assert min(map(len, top5)) >= MIN_TOP5_OVERLAP
    assert len(changed) <= MAX_TOP1_CHANGES
    assert all(margins[i] < NEAR_TIE for i in changed)
