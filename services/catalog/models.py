"""Plain data passed between the catalog's layers: stored rows, new uploads, classification results."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.catalog.terms import LabelScore, TagRow, visible_tag_names, visible_tags

# "No limit": larger than any sum of bigint sizes one owner can reach.
UNLIMITED = 2**62


@dataclass(frozen=True)
class Quota:
    """What one owner may store: total bytes and number of images."""

    bytes: int = UNLIMITED
    images: int = UNLIMITED


@dataclass(frozen=True)
class Usage:
    """What one owner's images use, uploads in progress included, against its quota."""

    bytes: int
    images: int
    quota: Quota

    def refuses(self, size: int) -> bool:
        return self.bytes + size > self.quota.bytes or self.images + 1 > self.quota.images


class QuotaExceeded(Exception):
    """An upload would take its owner past the storage quota."""

    def __init__(self, usage: Usage, size: int) -> None:
        super().__init__(usage, size)
        self.usage = usage
        self.size = size


@dataclass(frozen=True)
class NewImage:
    """What an upload knows before its row exists."""

    uid: str
    owner_id: str
    sha256: str
    filename: str
    content_type: str
    size_bytes: int
    # Upright size; orientation is the EXIF orientation of the stored bytes (0: not recorded, older images).
    width: int
    height: int
    thumb_format: str
    orientation: int
    # From EXIF, when the file has it.
    taken_at: datetime | None = None
    camera_make: str = ""
    camera_model: str = ""


# Keyword-only: its own fields follow NewImage's defaulted ones.
@dataclass(frozen=True, kw_only=True)
class ImageRow(NewImage):
    """One row of catalog.images, as every read returns it: the upload's facts plus the catalog's own."""

    id: int
    status: str
    status_reason: str
    category: str
    category_score: float
    labels: list[dict[str, Any]]
    model_tags: list[list[Any]]
    manual_tags: list[str]
    hidden_tags: list[str]
    model_name: str
    model_version: str
    created_at: datetime
    classified_at: datetime | None
    vocabulary_version: str
    # [{"box": {"x", "y", "width", "height"}, "score"}]; None when faces were not analysed.
    faces: list[dict[str, Any]] | None
    face_model_version: str
    # Set while the image is in the trash.
    deleted_at: datetime | None = None

    @property
    def tags(self) -> list[TagRow]:
        return visible_tags(self.model_tags, self.manual_tags, self.hidden_tags)

    @property
    def tag_names(self) -> list[str]:
        return visible_tag_names(self.model_tags, self.manual_tags, self.hidden_tags)

    def tag_names_from(self, min_score: float) -> list[str]:
        return visible_tag_names(self.model_tags, self.manual_tags, self.hidden_tags, min_score)


@dataclass(frozen=True)
class Classification:
    """What the inference service said about one image."""

    labels: list[LabelScore]
    category: str
    tags: list[str]
    model_name: str
    model_version: str
    # Made by inference from the same decode; empty when it sent none.
    thumbnail: bytes = b""
    thumbnail_format: str = ""
    # What the photo looks like, for similar photos; empty when the model returns none.
    embedding: tuple[float, ...] = ()
    # As ImageRow.faces; None when inference did not analyse faces (the stored faces are then kept).
    faces: list[dict[str, Any]] | None = None
    face_model_version: str = ""


@dataclass(frozen=True)
class ModelId:
    """The classifier served, and the face detector's version beside it ("" when none is served)."""

    name: str
    version: str
    face_version: str = ""

    @property
    def key(self) -> str:
        faces = f"+faces/{self.face_version}" if self.face_version else ""
        return f"{self.name}/{self.version}{faces}"


@dataclass(frozen=True)
class Outcome:
    """How an upload's classification ended: classified, pending (retry later) or failed (for good)."""

    status: str
    reason: str = ""
    classification: Classification | None = None


@dataclass(frozen=True)
class SearchHit:
    image_id: int
    # The image's best matching score; above 1 for a manual tag.
    weight: float


@dataclass(frozen=True)
class Page:
    rows: list[ImageRow]
    next_cursor: tuple[Any, ...] | None = None


@dataclass
class BatchResult:
    reclassified: int = 0
    failed: int = 0
    remaining: int = 0
    model_version: str = ""
    errors: list[str] = field(default_factory=list)
    # The highest image id the batch claimed (the cursor it started from when it claimed none).
    last_id: int = 0
