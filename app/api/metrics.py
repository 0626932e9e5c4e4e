"""GET /metrics in Prometheus' text format (labels carry provider and key index, never keys)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from app.api.deps import runtime_of
from app.errors import MetricsDisabled, Unauthorized


def bearer_matches(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


router = APIRouter(tags=["health"])


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """With METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>` may scrape.

    Served by the fast lane (api/fastlane.py) like the chat routes: a scrape every few seconds
    would otherwise pay FastAPI's dependency solving each time."""
    runtime = runtime_of(request)
    token = runtime.settings.metrics_token
    if token is not None and not bearer_matches(request, token.get_secret_value()):
        raise Unauthorized("missing or wrong metrics token", headers={"WWW-Authenticate": "Bearer"})
    if runtime.metrics is None:
        raise MetricsDisabled("metrics are switched off (METRICS_ENABLED=false)")
    if runtime.observability is not None:
        runtime.observability.flush()  # requests answered but still batched count too
    body = await runtime.metrics.render(runtime.service.providers, runtime.store)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
