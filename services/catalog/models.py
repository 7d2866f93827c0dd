"""Plain data passed between the catalog's layers: stored rows, new uploads, classification results."""

from dataclasses import dataclass, field
from datetime import datetime

from services.catalog.terms import LabelScore, TagRow, visible_tags


@dataclass(frozen=True)
class NewImage:
    """What an upload knows before its row exists."""

    uid: str
    owner_id: str
    sha256: str
    filename: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    thumb_format: str


@dataclass(frozen=True)
class ImageRow(NewImage):
    """One row of catalog.images, as every read returns it: the upload's facts plus the catalog's own."""

    id: int
    status: str
    status_reason: str
    category: str
    category_score: float
    labels: list[dict]
    model_tags: list[list]
    manual_tags: list[str]
    hidden_tags: list[str]
    model_name: str
    model_version: str
    created_at: datetime
    classified_at: datetime | None
    # Set while the image is in the trash.
    deleted_at: datetime | None = None

    @property
    def tags(self) -> list[TagRow]:
        return visible_tags(self.model_tags, self.manual_tags, self.hidden_tags)


@dataclass(frozen=True)
class Classification:
    """What the inference service said about one image."""

    labels: list[LabelScore]
    category: str
    tags: list[str]
    model_name: str
    model_version: str


@dataclass(frozen=True)
class ModelId:
    name: str
    version: str

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


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
    next_cursor: tuple | None = None


@dataclass
class BatchResult:
    reclassified: int = 0
    failed: int = 0
    remaining: int = 0
    model_version: str = ""
    errors: list[str] = field(default_factory=list)
    # The highest image id the batch claimed (the cursor it started from when it claimed none).
    last_id: int = 0
