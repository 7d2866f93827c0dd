"""/v1: the caller's images, their labels and tags, and what the model accepts."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from services.gateway import schemas
from services.gateway.deps import BackendsDep, OptionalToken, SettingsDep, Token
from services.gateway.downloads import stream_image
from services.gateway.uploads import UPLOAD_REQUEST_BODY, upload_all

router = APIRouter(prefix="/v1", tags=["images"])
model_router = APIRouter(prefix="/v1", tags=["model"])

Uid = Annotated[str, Path(max_length=128, description="The image's uid.")]
PageSize = Annotated[int, Query(ge=1, le=100, description="Images per page.")]
PageToken = Annotated[str, Query(max_length=2048, description="next_page_token of the previous page.")]
MinScore = Annotated[float, Query(ge=0, le=1, description="Only labels scoring at least this match.")]
_IMAGE_STREAM = {200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}, 304: {}}


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
    min_score: MinScore = 0.0,
    page_size: PageSize = 50,
    page_token: PageToken = "",
) -> Response:
    """The caller's images, newest first."""
    reply = await backends.catalog.list_images(
        token, category=category, tag=tag, min_score=min_score, page_size=page_size, page_token=page_token
    )
    return _page(reply)


@router.get("/search", response_model=schemas.ImagePage)
async def search(
    token: Token,
    backends: BackendsDep,
    q: Annotated[str, Query(min_length=1, max_length=64, description="Prefix of a tag or label: 'retr'.")],
    min_score: MinScore = 0.0,
    page_size: PageSize = 50,
    page_token: PageToken = "",
) -> Response:
    """Images with a tag or label starting with `q`, best match first."""
    reply = await backends.catalog.search(
        token, query=q, min_score=min_score, page_size=page_size, page_token=page_token
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


@router.get("/images/{uid}/thumbnail", response_class=Response, responses=_IMAGE_STREAM)
async def thumbnail(uid: Uid, request: Request, token: Token, backends: BackendsDep) -> Response:
    """A small preview, at most 256 pixels on the long side."""
    return await stream_image(backends.catalog, request, token, uid, thumbnail=True)


@router.delete("/images/{uid}", status_code=204, response_class=Response)
async def delete_image(uid: Uid, token: Token, backends: BackendsDep) -> Response:
    """Moves the image to the trash (see GET /v1/trash); POST /v1/images/{uid}/restore undoes it."""
    await backends.catalog.trash(token, uid)
    return Response(status_code=204)


@router.put("/images/{uid}/tags", response_model=schemas.Image)
async def set_tags(uid: Uid, body: schemas.TagsUpdate, token: Token, backends: BackendsDep) -> Response:
    """Replaces the image's manual tags; they rank before model labels and survive reclassification."""
    return schemas.json_response(schemas.image_from(await backends.catalog.set_tags(token, uid, body.tags)))


@router.get("/categories", response_model=schemas.CategoryList)
async def categories(token: Token, backends: BackendsDep) -> schemas.CategoryList:
    """How many images are in each category, most frequent first."""
    reply = await backends.catalog.categories(token)
    return schemas.CategoryList(
        categories=[schemas.CategoryCount(category=c.category, count=c.count) for c in reply.categories]
    )


@router.get("/tags", response_model=schemas.TagList)
async def tags(token: Token, backends: BackendsDep) -> schemas.TagList:
    """How many images carry each tag, most frequent first."""
    reply = await backends.catalog.tags(token)
    return schemas.TagList(tags=[schemas.TagCount(tag=t.tag, count=t.count) for t in reply.tags])


def _page(reply) -> Response:
    images = [schemas.image_from(image) for image in reply.images]
    page = schemas.ImagePage.model_construct(images=images, next_page_token=reply.next_page_token)
    return schemas.json_response(page)
