"""Statement fragments and parameters: the columns a classification sets, and an image's tag and search-term rows."""

from collections.abc import Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from services.catalog import terms
from services.catalog.models import Classification
from services.common.vocabulary import Vocabulary

CLASSIFIED = sql.SQL(
    "status = 'classified', status_reason = '', category = %(category)s, category_score = %(category_score)s,"
    " labels = %(labels)s, model_name = %(model_name)s,"
    # Faces not analysed this time: the face tags found before stay with the faces they came from.
    " model_tags = CASE WHEN %(faces_analysed)s THEN %(model_tags)s ELSE %(model_tags)s || COALESCE((SELECT"
    " jsonb_agg(kept) FROM jsonb_array_elements(i.model_tags) AS kept WHERE kept->>0 = ANY(%(face_tags)s::text[])"
    " AND NOT kept->>0 = ANY(%(new_tags)s::text[])), '[]'::jsonb) END,"
    " model_version = %(model_version)s, vocabulary_version = %(vocabulary_version)s,"
    " reclassify_tried = '', attempts = 0, next_attempt_at = now(),"
    " classified_at = now(), updated_at = now(),"
    # A classification without faces analysed (detector unavailable) keeps the faces found before.
    " faces = CASE WHEN %(faces_analysed)s THEN %(faces)s ELSE i.faces END,"
    " face_model_version = CASE WHEN %(faces_analysed)s THEN %(face_model_version)s ELSE i.face_model_version END"
)
TAG_ROWS = sql.SQL("unnest(%(tags)s::text[], %(scores)s::real[], %(manual)s::boolean[])")
TERM_ROWS = sql.SQL("unnest(%(terms)s::text[], %(weights)s::real[])")


def _labels_json(classification: Classification) -> Jsonb:
    ranked = sorted(classification.labels, key=lambda label: -label.score)
    return Jsonb(
        [
            {"label": label.label, "class_id": label.class_id, "score": label.score, "rank": rank}
            for rank, label in enumerate(ranked, start=1)
        ]
    )


def model_tags(result: Classification, vocabulary: Vocabulary) -> list[tuple[str, float]]:
    """The vocabulary's tags of the labels, plus the face tags inference gave, scored as the best face."""
    best_face = max((face["score"] for face in result.faces or ()), default=None)
    return terms.score_model_tags(result.labels, vocabulary, face_tags=result.tags, face_score=best_face)


def classified_params(result: Classification, tags: list[tuple[str, float]], vocabulary: Vocabulary) -> dict[str, Any]:
    """Parameters of CLASSIFIED: the columns a classification sets, given its model tags."""
    return {
        "vocabulary_version": vocabulary.version,
        "category": result.category,
        "category_score": max((label.score for label in result.labels), default=0.0),
        "labels": _labels_json(result),
        "model_tags": Jsonb([[tag, score] for tag, score in tags]),
        "model_name": result.model_name,
        "model_version": result.model_version,
        "faces_analysed": result.faces is not None,
        "face_tags": sorted(terms.FACE_TAGS),
        "new_tags": [tag for tag, _ in tags],
        "faces": Jsonb(result.faces) if result.faces is not None else None,
        "face_model_version": result.face_model_version,
    }


def index_params(tags: Sequence[terms.TagRow], vocabulary: Vocabulary) -> dict[str, list[Any]]:
    """An image's tag and search-term rows as parallel arrays for unnest(), sorted so writers lock rows in one order."""
    ordered = sorted(tags, key=lambda tag: tag.tag)
    found = sorted(terms.search_terms(ordered, vocabulary).items())
    return {
        "tags": [tag.tag for tag in ordered],
        "scores": [tag.score for tag in ordered],
        "manual": [tag.manual for tag in ordered],
        "terms": [term for term, _ in found],
        "weights": [weight for _, weight in found],
    }
