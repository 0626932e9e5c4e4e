"""The ASGI app: `create_app()` and its lifespan. `uvicorn app.main:app` builds it on first access."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from app.api import (
    admin,
    chat,
    clients,
    health,
    me,
    metrics,
    observability,
    openai,
    vault,
    websocket,
)
from app.api.access import AccessMiddleware
from app.api.body import BodyLimitMiddleware
from app.api.cors import ChatCORSMiddleware, parse_origins
from app.api.edge import GuardedFastAPI
from app.api.errors import install_error_handlers
from app.api.fastlane import install_fast_routes
from app.api.openapi_doc import install_openapi
from app.config import ConfigError, Settings, load_settings
from app.dashboard import routes as dashboard
from app.observability import logs
from app.runtime import LifespanState, build_runtime, check_master_key

logger = logging.getLogger("keypool")
# FastAPI looks for OpenTelemetry providers on every request (three lookups, and a wrapper when
# one is set): ~3 % of one worker's throughput measured side by side, for tracing that only an
# operator who installed an OpenTelemetry SDK would see. keypool's own metrics and logs do not
# need it; OPENTELEMETRY_ENABLED=true gives it back.
NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[LifespanState]:
    """The runtime reaches handlers one way only: the lifespan state (`api.deps.runtime_of`)."""
    runtime = await build_runtime(app.state.settings)
    # Everything built so far lives as long as the process: move it out of the collector's
    # reach, or each full collection walks it again (measured ~40 us per request at 2k req/s).
    gc.freeze()
    # A request allocates a few hundred short-lived objects; collecting the young generation
    # every 700 allocations ran several times per request.
    gc.set_threshold(20_000, 20, 20)
    try:
        yield LifespanState(
            runtime=runtime,
            access=runtime.access,
            observability=runtime.observability,
            vault=runtime.vault,
        )
    finally:
        await runtime.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    docs = settings.docs_enabled  # off by default: the schema maps every route for a scanner
    app = GuardedFastAPI(
        title="keypool",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry_enabled else NO_OPENTELEMETRY,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(AccessMiddleware)  # inside the body limit: it may read a /v1 body
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(ChatCORSMiddleware, origins=parse_origins(settings.cors_origins))
    modules = (
        chat,
        websocket,
        openai,
        admin,
        clients,
        me,
        vault,
        health,
        metrics,
        observability,
        dashboard,
    )
    for module in modules:
        app.include_router(module.router)
    install_fast_routes(app)
    install_openapi(app)
    return app


def configure_logging(level: str, log_format: str = "text") -> None:
    logs.configure(level, log_format)


def _app_from_environment() -> FastAPI:
    try:
        settings = load_settings()
        check_master_key(settings)
        return create_app(settings)
    except ConfigError as exc:
        print(f"keypool: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None


def __getattr__(name: str) -> FastAPI:
    # Built lazily so importing app.main (tests, tools) never reads the environment.
    if name == "app":
        application = _app_from_environment()
        globals()["app"] = application
        return application
    raise AttributeError(name)
