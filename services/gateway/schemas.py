"""The JSON shapes of the REST API, and their translation from the backends' messages."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Response
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, Field
from tagsmith.auth.v1 import auth_pb2
from tagsmith.catalog.v1 import catalog_pb2
from tagsmith.inference.v1 import inference_pb2

ImageStatus = Literal["pending", "classified", "failed"]
_STATUS: dict[int, ImageStatus] = {
    catalog_pb2.IMAGE_STATUS_PENDING: "pending",
    catalog_pb2.IMAGE_STATUS_CLASSIFIED: "classified",
    catalog_pb2.IMAGE_STATUS_FAILED: "failed",
}
_SOURCE: dict[int, Literal["model", "user"]] = {catalog_pb2.LABEL_SOURCE_USER: "user"}


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable, e.g. not_found, invalid_argument, payload_too_large.")
    message: str = Field(description="What went wrong, for a person.")
    request_id: str = Field(description="Quote it when reporting a problem.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=256, examples=["ada"])
    password: str = Field(min_length=1, max_length=1024, examples=["correct horse battery"])


class RefreshTokenBody(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class User(BaseModel):
    id: str
    username: str
    roles: list[str]
    created_at: datetime | None


class Storage(BaseModel):
    bytes_used: int = Field(description="Bytes your images use, uploads in progress included.")
    bytes_limit: int = Field(description="Bytes you may store; 0 means no limit.")
    images_used: int
    images_limit: int = Field(description="Images you may store; 0 means no limit.")


class Me(User):
    storage: Storage | None = Field(description="Your storage quota; null while the catalog cannot be reached.")


class Jwks(BaseModel):
    keys: list[dict] = Field(description="RFC 7517 JSON Web Keys.")


class ModelInfo(BaseModel):
    name: str
    version: str
    description: str


class Limits(BaseModel):
    max_bytes: int = Field(description="Largest accepted file, in bytes.")
    max_pixels: int = Field(description="Largest accepted width times height.")
    content_types: list[str] = Field(description="Accepted MIME types.")
    max_files: int = Field(description="Most files one upload request may carry.")


class Label(BaseModel):
    label: str
    class_id: int
    score: float = Field(ge=0, le=1)
    rank: int
    source: Literal["model", "user"]


class Box(BaseModel):
    x: float = Field(ge=0, le=1, description="Left edge, as a fraction of the upright width.")
    y: float = Field(ge=0, le=1, description="Top edge, as a fraction of the upright height.")
    width: float = Field(ge=0, le=1)
    height: float = Field(ge=0, le=1)


class Face(BaseModel):
    box: Box
    score: float = Field(ge=0, le=1, description="The face detector's confidence.")


class Image(BaseModel):
    uid: str
    filename: str
    content_type: str
    size: int = Field(description="Bytes of the original file.")
    sha256: str
    width: int = Field(description="Upright width (the stored size turned by the EXIF orientation).")
    height: int = Field(description="Upright height.")
    orientation: int = Field(
        description="EXIF orientation of the stored bytes, 1..8 (6: turned a quarter clockwise to view); "
        "0 for images stored before it was recorded."
    )
    status: ImageStatus
    status_reason: str
    category: str = Field(description="The best label; empty while pending.")
    labels: list[Label]
    tags: list[str] = Field(
        description="Your tags first, then the model's, best first; the model's scoring under your search threshold "
        "(min_score in /v1/me/settings) are left out, so every tag listed finds the image."
    )
    manual_tags: list[str]
    model_name: str
    model_version: str
    created_at: datetime | None
    classified_at: datetime | None
    duplicate: bool = Field(description="True when this upload matched bytes already stored.")
    near_duplicate_of: str | None = Field(
        None, description="uid of an earlier image of yours that this one nearly duplicates (the same shot)."
    )
    faces: list[Face] = Field(
        description="Faces found, best first, in fractions of the upright image; boxes only, no identities."
    )
    faces_analysed: bool = Field(
        description="False when the face detector has not looked at the image: an empty faces list then means "
        "not analysed, not no faces."
    )
    content_url: str
    thumbnail_url: str
    deleted_at: datetime | None = Field(None, description="When it was moved to the trash; only in the trash.")
    purge_at: datetime | None = Field(None, description="When the trash deletes it for good; only in the trash.")
    taken_at: datetime | None = Field(None, description="When the photo was taken (EXIF), read as UTC.")
    camera_make: str = Field("", description="EXIF camera make; empty when absent.")
    camera_model: str = Field("", description="EXIF camera model; empty when absent.")


class ImagePage(BaseModel):
    images: list[Image]
    next_page_token: str = Field(description="Pass as page_token for the next page; empty on the last one.")


class SimilarImage(Image):
    similarity: float = Field(description="How alike the two photos look, from 0 to 1 (1: the same picture).")


class SimilarPage(BaseModel):
    images: list[SimilarImage] = Field(description="Most similar first; the photo itself is not listed.")
    next_page_token: str = Field("", description="Always empty: the first page_size matches are the answer.")


class DuplicateGroup(BaseModel):
    images: list[Image] = Field(description="Newest first.")


class DuplicateGroups(BaseModel):
    groups: list[DuplicateGroup] = Field(description="Groups of near-duplicates, the newest group first.")


class TrashPage(ImagePage):
    retention_days: int = Field(description="Days a deleted image stays in the trash before it is deleted for good.")


class ArchiveRequest(BaseModel):
    uids: list[str] = Field(min_length=1, max_length=100, description="The images to put in the ZIP, 1 to 100.")


class UploadFailure(BaseModel):
    filename: str
    error: ErrorDetail


class UploadBatch(BaseModel):
    images: list[Image] = Field(description="Stored images, in the order of the form's files.")
    errors: list[UploadFailure] = Field(description="Files that were refused, and why.")


class TagsUpdate(BaseModel):
    tags: list[str] = Field(max_length=100, description="The image's manual tags from now on.")


class DigestQuery(BaseModel):
    sha256: list[Annotated[str, Field(pattern="^[0-9a-fA-F]{64}$")]] = Field(
        max_length=1000, description="Hex SHA-256 digests of whole files; at most 1000."
    )


class KnownDigest(BaseModel):
    sha256: str
    uid: str = Field(description="The caller's image with those bytes.")
    category: str


class DigestMatches(BaseModel):
    known: list[KnownDigest] = Field(description="The digests the caller's images already have; others are absent.")


class CategoryCount(BaseModel):
    category: str
    count: int


class CategoryList(BaseModel):
    categories: list[CategoryCount]


class TagCount(BaseModel):
    tag: str
    count: int


class TagList(BaseModel):
    tags: list[TagCount]


class UserSettings(BaseModel):
    min_score: float = Field(
        ge=0,
        le=1,
        description="Matches scoring below this are left out of search, /v1/tags and /v1/categories unless a "
        "request sets min_score.",
    )


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    backends: dict[str, str] = Field(default_factory=dict)


class BackendStatus(BaseModel):
    status: Literal["SERVING", "NOT_SERVING", "UNREACHABLE", "UNKNOWN", "SERVICE_UNKNOWN"]
    dependencies: dict[str, str] = Field(
        description="What the backend watches itself (database, object storage), each SERVING or NOT_SERVING."
    )


class SystemStatus(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="ok when every backend and dependency is SERVING.")
    ready: bool = Field(description="What /readyz answers for this gateway pod.")
    backends: dict[str, BackendStatus]


class LegacyUpload(BaseModel):
    category: str
    uid: str


class LegacyImage(BaseModel):
    uid: str
    category: str


def timestamp(value: Timestamp, present: bool) -> datetime | None:
    return value.ToDatetime(tzinfo=UTC) if present else None


def storage_from(usage: catalog_pb2.Usage) -> Storage:
    return Storage(
        bytes_used=usage.bytes_used,
        bytes_limit=usage.bytes_limit,
        images_used=usage.images_used,
        images_limit=usage.images_limit,
    )


def user_from(user: auth_pb2.User) -> User:
    return User(
        id=user.id,
        username=user.username,
        roles=list(user.roles),
        created_at=timestamp(user.created_at, user.HasField("created_at")),
    )


def tokens_from(pair: auth_pb2.TokenPair) -> TokenPair:
    return TokenPair(
        access_token=pair.access_token,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        refresh_expires_in=pair.refresh_expires_in,
    )


def model_from(info: inference_pb2.ModelInfo) -> ModelInfo:
    return ModelInfo(name=info.name, version=info.version, description=info.description)


def json_response(model: BaseModel, *, status_code: int = 200) -> Response:
    """Serializes a model built from trusted backend data, skipping FastAPI's second validation of it."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


# The builders below use model_construct: the backends' messages are already typed, and validating every image
# of every page again would cost more than the rest of the request.
def label_from(label: catalog_pb2.Label) -> Label:
    return Label.model_construct(
        label=label.label,
        class_id=label.class_id,
        score=min(1.0, max(0.0, label.score)),
        rank=label.rank,
        source=_SOURCE.get(label.source, "model"),
    )


def similar_from(found: catalog_pb2.SimilarImage) -> SimilarImage:
    return SimilarImage.model_construct(**dict(image_from(found.image)), similarity=round(found.similarity, 4))


def face_from(face: catalog_pb2.Face) -> Face:
    box = face.box
    return Face.model_construct(
        box=Box.model_construct(x=box.x, y=box.y, width=box.width, height=box.height), score=face.score
    )


def image_from(image: catalog_pb2.Image) -> Image:
    return Image.model_construct(
        uid=image.uid,
        filename=image.filename,
        content_type=image.content_type,
        size=image.size_bytes,
        sha256=image.sha256,
        width=image.width,
        height=image.height,
        orientation=image.orientation,
        status=_STATUS.get(image.status, "pending"),
        status_reason=image.status_reason,
        category=image.category,
        labels=[label_from(label) for label in image.labels],
        tags=list(image.tags),
        manual_tags=list(image.manual_tags),
        model_name=image.model_name,
        model_version=image.model_version,
        created_at=timestamp(image.created_at, image.HasField("created_at")),
        classified_at=timestamp(image.classified_at, image.HasField("classified_at")),
        duplicate=image.duplicate,
        near_duplicate_of=image.near_duplicate_of or None,
        faces=[face_from(face) for face in image.faces],
        faces_analysed=image.faces_analysed,
        content_url=f"/v1/images/{image.uid}/content",
        thumbnail_url=f"/v1/images/{image.uid}/thumbnail",
        deleted_at=timestamp(image.deleted_at, image.HasField("deleted_at")),
        purge_at=timestamp(image.purge_at, image.HasField("purge_at")),
        taken_at=timestamp(image.taken_at, image.HasField("taken_at")),
        camera_make=image.camera_make,
        camera_model=image.camera_model,
    )
