"""Health, readiness, metrics, the web page and the API docs."""

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway import schemas
from services.gateway.deps import BackendsDep

STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS = "/docs/assets"
# The page loads nothing from elsewhere; thumbnails are blob: URLs made from authenticated fetches.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

# The same headers on the page and on /docs: neither may be framed, run scripts from elsewhere, or go stale.
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
# Swagger UI, started by a script file (the CSP forbids inline scripts) from the gateway's own copy.
DOCS_HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tagsmith API</title>
<link rel="icon" href="{DOCS_ASSETS}/favicon-32x32.png">
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)
health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", response_model=schemas.Health)
async def healthz() -> schemas.Health:
    """The process is alive."""
    return schemas.Health(status="ok")


@health_router.get("/readyz", response_model=schemas.Health, responses={503: {"model": schemas.Health}})
async def readyz(backends: BackendsDep):
    """Every backend answers its health check with SERVING; 503 otherwise."""
    statuses = await backends.readiness()
    ready = all(status == "SERVING" for status in statuses.values())
    body = schemas.Health(status="ok" if ready else "unavailable", backends=statuses)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return HTMLResponse(DOCS_HTML, headers=PAGE_HEADERS)
