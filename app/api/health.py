"""Liveness and readiness: a dependency the gateway survives makes it degraded, never unready."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import RuntimeDep
from app.api.responses import json_response
from app.db.session import ping

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> Response:
    database = "ok" if await ping(runtime.engine) else "down"
    redis = runtime.redis_status()
    degraded = database == "down" or redis == "down"
    status = "degraded" if degraded else "ready"
    code = 200
    if runtime.draining or not runtime.ready:
        status, code = "not_ready", 503
    return json_response({"status": status, "checks": {"database": database, "redis": redis}}, code)
