"""GET /metrics in Prometheus' text format (labels carry provider and key index, never keys)."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from app.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/metrics")
async def metrics(runtime: RuntimeDep) -> Response:
    body = await runtime.metrics.render(runtime.service.providers, runtime.store)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
