"""The original service's API, with its exact shapes, so existing clients keep working."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from services.gateway import schemas
from services.gateway.deps import BackendsDep, LegacyOptionalToken, LegacyToken, SettingsDep
from services.gateway.downloads import stream_image
from services.gateway.errors import ApiError
from services.gateway.uploads import FIELD, UPLOAD_REQUEST_BODY, next_file, open_form, upload_one

router = APIRouter(tags=["original API"])

# Enough for one file's multipart framing and headers.
_FORM_OVERHEAD_BYTES = 64 * 1024
# The original API lists everything at once; this bounds the work one request can cause.
_MAX_LISTED = 10_000
Uid = Annotated[str, Path(max_length=128)]
_FILE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}},
    304: {},
}


@router.get("/model", response_model=schemas.ModelInfo)
async def model(backends: BackendsDep, token: LegacyOptionalToken) -> schemas.ModelInfo:
    """The classifier's name, version and description."""
    return schemas.model_from(await backends.inference.model(token))


@router.post(
    "/img",
    response_model=schemas.LegacyUpload,
    openapi_extra=UPLOAD_REQUEST_BODY,
    responses={413: {"model": schemas.ErrorResponse}, 415: {"model": schemas.ErrorResponse}},
)
async def upload(request: Request, token: LegacyToken, backends: BackendsDep, settings: SettingsDep):
    """Stores and classifies the file of form field `image`; answers its category and uid."""
    form = open_form(request, limit=settings.max_upload_bytes + _FORM_OVERHEAD_BYTES)
    part = await next_file(form)
    if part is None:
        raise ApiError(400, f"the form has no file in field '{FIELD}'")
    result = await upload_one(backends.catalog, form, part, token=token, max_bytes=settings.max_upload_bytes)
    if isinstance(result, ApiError):
        raise result
    return schemas.LegacyUpload(category=result.category, uid=result.uid)


@router.get("/images", response_model=list[schemas.LegacyImage])
async def images(token: LegacyToken, backends: BackendsDep) -> JSONResponse:
    """Every image, newest first, as uid and category."""
    listed: list[dict[str, str]] = []
    page_token = ""
    while len(listed) < _MAX_LISTED:
        reply = await backends.catalog.list_images(token, page_size=100, page_token=page_token)
        listed += [{"uid": i.uid, "category": i.category} for i in reply.images]
        page_token = reply.next_page_token
        if not page_token:
            break
    return JSONResponse(listed[:_MAX_LISTED])


@router.get("/img/{uid}", response_class=Response, responses=_FILE)
async def get_file(uid: Uid, request: Request, token: LegacyToken, backends: BackendsDep) -> Response:
    """The stored file."""
    return await stream_image(backends.catalog, request, token, uid)


@router.post("/img/{uid}", response_class=Response, responses=_FILE)
async def post_file(uid: Uid, request: Request, token: LegacyToken, backends: BackendsDep) -> Response:
    """The stored file (the original API also answered POST here)."""
    return await stream_image(backends.catalog, request, token, uid)


@router.get("/categories", response_model=dict[str, str])
async def categories(token: LegacyToken, backends: BackendsDep) -> dict[str, str]:
    """Number of images per category; the counts are strings, as the original API sent them."""
    reply = await backends.catalog.categories(token)
    return {c.category: str(c.count) for c in reply.categories}
