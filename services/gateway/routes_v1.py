"""/v1: the caller's images, their labels and tags, and what the model accepts."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from google.protobuf.timestamp_pb2 import Timestamp
from tagsmith.catalog.v1 import catalog_pb2

from services.gateway import schemas
from services.gateway.deps import BackendsDep, OptionalToken, SettingsDep, Token
from services.gateway.downloads import stream_image
from services.gateway.uploads import UPLOAD_REQUEST_BODY, upload_all

router = APIRouter(prefix="/v1", tags=["images"])
settings_router = APIRouter(prefix="/v1", tags=["settings"])
model_router = APIRouter(prefix="/v1", tags=["model"])

Uid = Annotated[str, Path(max_length=128, description="The image's uid.")]
PageSize = Annotated[int, Query(ge=1, le=100, description="Images per page.")]
PageToken = Annotated[str, Query(max_length=2048, description="next_page_token of the previous page.")]
MinScore = Annotated[
    float | None,
    Query(ge=0, le=1, description="Only matches scoring at least this count; unset: your min_score setting."),
]
TakenAfter = Annotated[datetime | None, Query(description="Only photos taken at or after this instant (ISO 8601).")]
TakenBefore = Annotated[datetime | None, Query(description="Only photos taken before this instant (ISO 8601).")]
Order = Annotated[
    Literal["", "taken_newest", "taken_oldest"],
    Query(description="By taken date (EXIF, else the upload time) instead of the default order."),
]
_ORDERS = {
    "": catalog_pb2.IMAGE_ORDER_UNSPECIFIED,
    "taken_newest": catalog_pb2.IMAGE_ORDER_TAKEN_NEWEST,
    "taken_oldest": catalog_pb2.IMAGE_ORDER_TAKEN_OLDEST,
}
_IMAGE_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}},
    304: {},
}


@model_router.get("/model", response_model=schemas.ModelInfo)
async def model(backends: BackendsDep, token: OptionalToken) -> schemas.ModelInfo:
    """The classifier currently labelling images."""
    return schemas.model_from(await backends.inference.model(token))


@model_router.get("/limits", response_model=schemas.Limits)
async def limits(token: Token, backends: BackendsDep, settings: SettingsDep) -> schemas.Limits:
    """What an upload may be, so clients can check files before sending them."""
    reply = await backends.inference.limits(token)
    return schemas.Limits(
        max_bytes=min(reply.max_bytes or settings.max_upload_bytes, settings.max_upload_bytes),
        max_pixels=reply.max_pixels,
        content_types=list(reply.content_types),
        max_files=settings.max_files_per_request,
    )


@router.post(
    "/images",
    status_code=201,
    response_model=schemas.Image | schemas.UploadBatch,
    openapi_extra=UPLOAD_REQUEST_BODY,
    responses={413: {"model": schemas.ErrorResponse}, 415: {"model": schemas.ErrorResponse}},
)
async def upload(request: Request, token: Token, backends: BackendsDep, settings: SettingsDep):
    """Stores and classifies the files of form field `image`: one file answers the image, several a batch."""
    stored, failures, count = await upload_all(request, backends.catalog, token, settings)
    if count == 1 and stored:
        return schemas.json_response(schemas.image_from(stored[0]), status_code=201)
    batch = schemas.UploadBatch.model_construct(images=[schemas.image_from(i) for i in stored], errors=failures)
    return schemas.json_response(batch, status_code=201)


@router.post("/images/digests", response_model=schemas.DigestMatches)
async def find_digests(body: schemas.DigestQuery, token: Token, backends: BackendsDep) -> schemas.DigestMatches:
    """Which of these SHA-256 digests the caller's images already have, so a client skips them before uploading."""
    reply = await backends.catalog.find_digests(token, body.sha256)
    return schemas.DigestMatches(
        known=[schemas.KnownDigest(sha256=k.sha256, uid=k.uid, category=k.category) for k in reply.known]
    )


@router.get("/images", response_model=schemas.ImagePage)
async def list_images(
    token: Token,
    backends: BackendsDep,
    category: Annotated[str, Query(max_length=256, description="Exact category, e.g. 'tabby'.")] = "",
    tag: Annotated[str, Query(max_length=64, description="Exact tag, any case, e.g. 'dog'.")] = "",
    min_score: MinScore = None,
    page_size: PageSize = 50,
    page_token: PageToken = "",
    taken_after: TakenAfter = None,
    taken_before: TakenBefore = None,
    order: Order = "",
) -> Response:
    """The caller's images, newest upload first (or by taken date). With `tag` or `category`, matches below
    your min_score setting are left out unless `min_score` is given."""
    reply = await backends.catalog.list_images(
        token,
        category=category,
        tag=tag,
        min_score=min_score,
        page_size=page_size,
        page_token=page_token,
        **_taken(taken_after, taken_before, order),
    )
    return _page(reply)


@router.get("/search", response_model=schemas.ImagePage)
async def search(
    token: Token,
    backends: BackendsDep,
    q: Annotated[
        str, Query(min_length=1, max_length=100, description="Words, any case, singular or plural: 'coffee cups'.")
    ],
    min_score: MinScore = None,
    page_size: PageSize = 50,
    page_token: PageToken = "",
    taken_after: TakenAfter = None,
    taken_before: TakenBefore = None,
    order: Order = "",
) -> Response:
    """Images matching every word of `q` (a label, WordNet synonym or broader word, or your own tag), best match
    first: your manual tags, then the model's confidence. Matches below your min_score setting are left out."""
    reply = await backends.catalog.search(
        token,
        query=q,
        min_score=min_score,
        page_size=page_size,
        page_token=page_token,
        **_taken(taken_after, taken_before, order),
    )
    return _page(reply)


@router.get("/images/{uid}", response_model=schemas.Image)
async def get_image(uid: Uid, token: Token, backends: BackendsDep) -> Response:
    """One image's metadata, labels and tags."""
    return schemas.json_response(schemas.image_from(await backends.catalog.get(token, uid)))


@router.get("/images/{uid}/content", response_class=Response, responses=_IMAGE_STREAM)
async def content(
    uid: Uid,
    request: Request,
    token: Token,
    backends: BackendsDep,
    download: Annotated[bool, Query(description="Ask the browser to save the file instead of showing it.")] = False,
) -> Response:
    """The original bytes, byte for byte."""
    return await stream_image(backends.catalog, request, token, uid, attachment=download)


_THUMBNAIL_SIZES = {"small": catalog_pb2.THUMBNAIL_SIZE_SMALL, "display": catalog_pb2.THUMBNAIL_SIZE_DISPLAY}


@router.get("/images/{uid}/thumbnail", response_class=Response, responses=_IMAGE_STREAM)
async def thumbnail(
    uid: Uid,
    request: Request,
    token: Token,
    backends: BackendsDep,
    size: Annotated[
        Literal["small", "display"],
        Query(
            description="small: at most 256 pixels on the long side, for grids. display: at most 1600, JPEG or PNG, "
            "for showing a photo whose original the browser cannot decode (HEIC); made on first request."
        ),
    ] = "small",
) -> Response:
    """A preview of the image, upright, as JPEG (PNG when it has transparency)."""
    return await stream_image(backends.catalog, request, token, uid, thumbnail=_THUMBNAIL_SIZES[size])


@router.delete("/images/{uid}", status_code=204, response_class=Response)
async def delete_image(uid: Uid, token: Token, backends: BackendsDep) -> Response:
    """Moves the image to the trash (see GET /v1/trash); POST /v1/images/{uid}/restore undoes it."""
    await backends.catalog.trash(token, uid)
    return Response(status_code=204)


@router.put("/images/{uid}/tags", response_model=schemas.Image)
async def set_tags(uid: Uid, body: schemas.TagsUpdate, token: Token, backends: BackendsDep) -> Response:
    """Replaces the image's manual tags; they rank before model labels and survive reclassification."""
    return schemas.json_response(schemas.image_from(await backends.catalog.set_tags(token, uid, body.tags)))


@router.get("/images/{uid}/similar", response_model=schemas.SimilarPage)
async def similar(uid: Uid, token: Token, backends: BackendsDep, page_size: PageSize = 20) -> Response:
    """Your photos that look most like this one, most similar first."""
    reply = await backends.catalog.similar(token, uid, page_size)
    images = [schemas.similar_from(found) for found in reply.images]
    return schemas.json_response(schemas.SimilarPage.model_construct(images=images, next_page_token=""))


@router.get("/duplicates", response_model=schemas.DuplicateGroups)
async def duplicates(token: Token, backends: BackendsDep) -> Response:
    """Groups of your photos that are near-duplicates: the same shot re-encoded, resized, cropped a little or
    taken a moment apart."""
    reply = await backends.catalog.near_duplicates(token)
    groups = [
        schemas.DuplicateGroup.model_construct(images=[schemas.image_from(i) for i in g.images]) for g in reply.groups
    ]
    return schemas.json_response(schemas.DuplicateGroups.model_construct(groups=groups))


@router.get("/categories", response_model=schemas.CategoryList)
async def categories(token: Token, backends: BackendsDep, min_score: MinScore = None) -> schemas.CategoryList:
    """How many images are in each category (top label scoring at least min_score), most frequent first."""
    reply = await backends.catalog.categories(token, min_score=min_score)
    return schemas.CategoryList(
        categories=[schemas.CategoryCount(category=c.category, count=c.count) for c in reply.categories]
    )


@router.get("/tags", response_model=schemas.TagList)
async def tags(
    token: Token,
    backends: BackendsDep,
    prefix: Annotated[str, Query(max_length=100, description="Only tags starting with this: suggestions.")] = "",
    limit: Annotated[int, Query(ge=0, le=1000, description="At most this many tags; 0 means all.")] = 0,
    min_score: MinScore = None,
) -> schemas.TagList:
    """How many images a search for each tag finds, most first; with `prefix`, suggestions while typing."""
    reply = await backends.catalog.tags(token, prefix=prefix, limit=limit, min_score=min_score)
    return schemas.TagList(tags=[schemas.TagCount(tag=t.tag, count=t.count) for t in reply.tags])


@settings_router.get("/me/settings", response_model=schemas.UserSettings)
async def get_settings(token: Token, backends: BackendsDep) -> schemas.UserSettings:
    """Your search settings."""
    return schemas.UserSettings(min_score=round((await backends.catalog.settings(token)).min_score, 6))


@settings_router.put("/me/settings", response_model=schemas.UserSettings)
async def put_settings(body: schemas.UserSettings, token: Token, backends: BackendsDep) -> schemas.UserSettings:
    """Changes your search settings."""
    reply = await backends.catalog.update_settings(token, min_score=body.min_score)
    return schemas.UserSettings(min_score=round(reply.min_score, 6))


def _taken(after: datetime | None, before: datetime | None, order: str) -> dict:
    """Taken-date fields of a list or search request; a date without a zone is read as UTC."""
    fields: dict = {"order": _ORDERS[order]}
    for name, value in (("taken_after", after), ("taken_before", before)):
        if value is not None:
            stamp = Timestamp()
            stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
            fields[name] = stamp
    return fields


def _page(reply) -> Response:
    images = [schemas.image_from(image) for image in reply.images]
    page = schemas.ImagePage.model_construct(images=images, next_page_token=reply.next_page_token)
    return schemas.json_response(page)
