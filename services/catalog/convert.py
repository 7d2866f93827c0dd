"""Stored rows to protobuf messages."""

from datetime import UTC, datetime
from typing import Any

from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.models import ImageRow

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATUSES = {
    "pending": catalog_pb2.IMAGE_STATUS_PENDING,
    "classified": catalog_pb2.IMAGE_STATUS_CLASSIFIED,
    "failed": catalog_pb2.IMAGE_STATUS_FAILED,
}


def image_message(
    row: ImageRow, *, duplicate: bool = False, near_duplicate_of: str = "", min_score: float = 0.0
) -> catalog_pb2.Image:
    """The image as the API shows it; model tags scoring under `min_score` (the owner's search threshold) are left
    out, so every tag listed is one the owner's search finds the image by.

    A list or search page builds 50 of these: labels go in as dicts and times through _timestamp, about half the
    cost of Label objects and protobuf's FromDatetime, which computes in Python.
    """
    model = {"source": catalog_pb2.LABEL_SOURCE_MODEL, "model_name": row.model_name, "model_version": row.model_version}
    return catalog_pb2.Image(
        uid=row.uid,
        owner_id=row.owner_id,
        filename=row.filename,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        orientation=row.orientation,
        status=STATUSES.get(row.status, catalog_pb2.IMAGE_STATUS_UNSPECIFIED),
        status_reason=row.status_reason,
        category=row.category,
        labels=[_label(item) | model for item in row.labels],
        tags=row.tag_names_from(min_score),
        manual_tags=row.manual_tags,
        model_name=row.model_name,
        model_version=row.model_version,
        duplicate=duplicate,
        near_duplicate_of=near_duplicate_of,
        camera_make=row.camera_make,
        camera_model=row.camera_model,
        vocabulary_version=row.vocabulary_version,
        faces=[_face(face) for face in row.faces or ()],
        faces_analysed=row.faces is not None,
        face_model_version=row.face_model_version,
        created_at=_timestamp(row.created_at),
        taken_at=_timestamp(row.taken_at),
        classified_at=_timestamp(row.classified_at),
        deleted_at=_timestamp(row.deleted_at),
    )


def _label(item: dict[str, Any]) -> dict[str, Any]:
    """A stored label's fields (stored rows may carry more keys than the message has)."""
    return {"label": item["label"], "class_id": item["class_id"], "score": item["score"], "rank": item["rank"]}


def _timestamp(moment: datetime | None) -> dict[str, int] | None:
    """A Timestamp's fields; None leaves the field unset. Timedelta arithmetic runs in C."""
    if moment is None:
        return None
    since = moment - _EPOCH
    return {"seconds": since.days * 86400 + since.seconds, "nanos": since.microseconds * 1000}


def _face(face: dict[str, Any]) -> catalog_pb2.Face:
    return catalog_pb2.Face(box=catalog_pb2.Box(**face["box"]), score=face["score"])
