"""Stored rows to protobuf messages."""

from typing import Any

from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.models import ImageRow

STATUSES = {
    "pending": catalog_pb2.IMAGE_STATUS_PENDING,
    "classified": catalog_pb2.IMAGE_STATUS_CLASSIFIED,
    "failed": catalog_pb2.IMAGE_STATUS_FAILED,
}


def image_message(
    row: ImageRow, *, duplicate: bool = False, near_duplicate_of: str = "", min_score: float = 0.0
) -> catalog_pb2.Image:
    """The image as the API shows it; model tags scoring under `min_score` (the owner's search threshold) are left
    out, so every tag listed is one the owner's search finds the image by."""
    message = catalog_pb2.Image(
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
        labels=[_label(item, row) for item in row.labels],
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
    )
    message.created_at.FromDatetime(row.created_at)
    if row.taken_at is not None:
        message.taken_at.FromDatetime(row.taken_at)
    if row.classified_at is not None:
        message.classified_at.FromDatetime(row.classified_at)
    if row.deleted_at is not None:
        message.deleted_at.FromDatetime(row.deleted_at)
    return message


def _label(item: dict[str, Any], row: ImageRow) -> catalog_pb2.Label:
    return catalog_pb2.Label(
        label=item["label"],
        class_id=item["class_id"],
        score=item["score"],
        rank=item["rank"],
        source=catalog_pb2.LABEL_SOURCE_MODEL,
        model_name=row.model_name,
        model_version=row.model_version,
    )


def _face(face: dict[str, Any]) -> catalog_pb2.Face:
    return catalog_pb2.Face(box=catalog_pb2.Box(**face["box"]), score=face["score"])
