"""The fixed projection the catalog stores embeddings through: stored vectors stay comparable across releases."""

import hashlib

import numpy as np
import pytest

from services.catalog.store.similarity import EMBEDDING_DIMENSIONS, STORED_DIMENSIONS, _projection, as_vector, project


def test_the_projection_never_changes():
    # A changed matrix would make new embeddings incomparable with the stored ones (a migration must re-embed).
    digest = hashlib.sha256(_projection().tobytes()).hexdigest()
    assert digest == "7d240614d909b16f9335388c912c20d684f46222f39ecdc958fd6dc5470a3ffa"


def test_projected_embeddings_are_unit_vectors_that_keep_angles():
    rng = np.random.default_rng(5)
    embeddings = np.abs(rng.standard_normal((50, EMBEDDING_DIMENSIONS)))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    projected = project(embeddings)
    assert projected.shape == (50, STORED_DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    assert np.abs(projected @ projected.T - embeddings @ embeddings.T).max() < 0.25


@pytest.mark.parametrize(
    "embedding", [[0.1] * 512, [float("nan")] * EMBEDDING_DIMENSIONS, [0.0] * EMBEDDING_DIMENSIONS]
)
def test_an_embedding_of_the_wrong_shape_or_without_direction_is_refused(embedding):
    with pytest.raises(ValueError, match="finite numbers, not all zero"):
        as_vector(embedding)
