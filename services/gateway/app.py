"""The FastAPI application: routes, error handling, middleware, and the backends' lifetime."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import swagger_ui
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, Gauge

from services.common.identity import LoginTokenProvider
from services.common.tokens import TokenVerifier, grpc_jwks_source
from services.gateway import errors, routes_auth, routes_legacy, routes_library, routes_system, routes_v1, schemas
from services.gateway.clients import Backends
from services.gateway.config import Settings
from services.gateway.observability import HttpMetrics, RequestContext
from services.gateway.timeouts import BodyReadTimeout

# Statuses any API route may answer besides its own, documented so clients and schema checks know them.
COMMON_ERRORS = (400, 401, 403, 404, 409, 429, 500, 503, 504)


def create_app(settings: Settings, *, backends: Backends | None = None) -> FastAPI:
    """The gateway; pass `backends` to use clients the caller owns (tests), else they open at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backends is not None:
            yield
            return
        _attach(app, Backends.open(settings), settings)
        try:
            yield
        finally:
            await app.state.backends.close()

    app = _TagsmithApi(
        title="Tagsmith",
        version="1.0.0",
        description="Upload photos; a pretrained ImageNet classifier labels them; list, search and download them.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = CollectorRegistry()
    app.state.backend_up = Gauge(
        "tagsmith_backend_up",
        "1 when a backend answered its last health check (from /readyz or /v1/status) with SERVING.",
        ["backend"],
        registry=app.state.registry,
    )
    if backends is not None:
        _attach(app, backends, settings)
    errors.install(app)
    for router in (
        routes_auth.router,
        routes_v1.model_router,
        routes_v1.router,
        routes_library.router,
        routes_v1.settings_router,
        routes_legacy.router,
    ):
        app.include_router(router, responses={status: {"model": schemas.ErrorResponse} for status in COMMON_ERRORS})
    app.include_router(routes_system.health_router)
    app.include_router(routes_system.router)
    app.mount("/static", StaticFiles(directory=routes_system.STATIC_DIR), name="static")
    swagger_assets = StaticFiles(directory=Path(swagger_ui.__file__).parent / "static")
    app.mount(routes_system.DOCS_ASSETS, swagger_assets, name="docs")
    _add_middleware(app, settings)
    return app


def _attach(app: FastAPI, backends: Backends, settings: Settings) -> None:
    app.state.backends = backends
    app.state.verifier = TokenVerifier(
        jwks_source=grpc_jwks_source(backends.auth.channel),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        min_refresh_seconds=settings.jwks_min_refresh_seconds,
    )
    app.state.anonymous = (
        LoginTokenProvider(
            backends.auth.channel,
            username=settings.anonymous_username,
            password=settings.anonymous_password.get_secret_value(),
            call_timeout=settings.backend_timeout_seconds,
        )
        if settings.anonymous_mode
        else None
    )


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "If-None-Match"],
            expose_headers=["X-Request-ID", "ETag", "Content-Disposition", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(BodyReadTimeout, seconds=settings.body_timeout_seconds, min_rate=settings.body_min_rate_bytes)
    app.add_middleware(RequestContext, metrics=HttpMetrics(app.state.registry))


class _TagsmithApi(FastAPI):
    def openapi(self) -> dict[str, Any]:
        return _openapi(self)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with validation failures documented as the 400 they are."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
