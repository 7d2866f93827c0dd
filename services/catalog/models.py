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
    # Upright size; orientation is the EXIF orientation of the stored bytes (0: not recorded, older images).
    width: int
    height: int
    thumb_format: str
    orientation: int


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
    # [{"box": {"x", "y", "width", "height"}, "score"}]; None when faces were not analysed.
    faces: list[dict] | None
    face_model_version: str

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
    # Made by inference from the same decode; empty when it sent none.
    thumbnail: bytes = b""
    thumbnail_format: str = ""
    # As ImageRow.faces; None when inference did not analyse faces (the stored faces are then kept).
    faces: list[dict] | None = None
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
