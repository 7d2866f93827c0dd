"""The classifier's embedding output: unit vectors from both signatures that find a photo's variants."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance
from skimage import data

from services.catalog.store.similarity import NEAR_DUPLICATE_SIMILARITY, STORED_DIMENSIONS, project
from services.common.model_contract import EMBEDDING_OUTPUT, EMBEDDING_SIZE, PIXELS_SIGNATURE
from services.inference.pixels import to_model_pixels

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "immunohistochemistry",
    "brick",
    "hubble_deep_field",
    "page",
)


def photo(name: str) -> Image.Image:
    array = getattr(data, name)()
    return Image.fromarray(array if array.ndim == 3 else np.stack([array] * 3, axis=-1)).convert("RGB")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def variants(image: Image.Image) -> list[Image.Image]:
    """The same shot as people store it again: re-encoded, resized, cropped a little, mirrored, brightened."""
    w, h = image.size
    return [
        jpeg(image, 30),
        image.resize((w // 2, h // 2)),
        image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        ImageEnhance.Brightness(image).enhance(1.3),
    ]


def embed(serve, images: list[Image.Image]) -> np.ndarray:
    encoded = [tf.io.encode_png(np.asarray(image.convert("RGB"))) for image in images]
    return serve(images=tf.stack(encoded))[EMBEDDING_OUTPUT].numpy()


def test_embeddings_are_unit_vectors_and_agree_across_signatures(serve, loaded):
    images = [photo(name) for name in PHOTOS[:4]]
    from_files = embed(serve, images)
    assert from_files.shape == (4, EMBEDDING_SIZE)
    np.testing.assert_allclose(np.linalg.norm(from_files, axis=1), 1.0, atol=1e-5)
    pixels = np.stack([to_model_pixels(image) for image in images])
    from_pixels = loaded.signatures[PIXELS_SIGNATURE](pixels=tf.constant(pixels))[EMBEDDING_OUTPUT].numpy()
    assert (np.sum(from_files * from_pixels, axis=1) > 0.98).all()


@pytest.fixture(scope="module")
def originals_and_variants(serve):
    originals = embed(serve, [photo(name) for name in PHOTOS])
    return originals, [embed(serve, variants(photo(name))) for name in PHOTOS]


def test_every_variant_is_nearest_to_its_own_original(originals_and_variants):
    originals, variant_sets = originals_and_variants
    for index, variant_embeddings in enumerate(variant_sets):
        nearest = np.argmax(variant_embeddings @ originals.T, axis=1)
        assert (nearest == index).all(), PHOTOS[index]


def test_the_near_duplicate_threshold_separates_variants_from_other_photos(originals_and_variants):
    originals, variant_sets = originals_and_variants
    same = np.concatenate([variants @ originals[i] for i, variants in enumerate(variant_sets)])
    others = (originals @ originals.T)[~np.eye(len(PHOTOS), dtype=bool)]
    assert (same >= NEAR_DUPLICATE_SIMILARITY).mean() >= 0.95
    assert (others < NEAR_DUPLICATE_SIMILARITY).all()


def test_the_stored_projection_keeps_variants_nearest_and_the_threshold(originals_and_variants):
    """The catalog stores a 256-number projection: variants must still be nearest to their own original, and the
    near-duplicate threshold must still separate them from other photos."""
    originals, variant_sets = originals_and_variants
    originals = project(originals)
    assert originals.shape == (len(PHOTOS), STORED_DIMENSIONS)
    for index, variant_embeddings in enumerate(variant_sets):
        assert (np.argmax(project(variant_embeddings) @ originals.T, axis=1) == index).all(), PHOTOS[index]
    same = np.concatenate([project(variants) @ originals[i] for i, variants in enumerate(variant_sets)])
    others = (originals @ originals.T)[~np.eye(len(PHOTOS), dtype=bool)]
    assert (same >= NEAR_DUPLICATE_SIMILARITY).mean() >= 0.95
    assert (others < NEAR_DUPLICATE_SIMILARITY).all()
