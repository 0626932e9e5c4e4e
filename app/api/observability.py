"""Admin observability routes: the rolling metrics summary and the recent errors."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import AdminAuth, RuntimeDep
from app.api.responses import json_response
from app.errors import InvalidRequest, NotReady
from app.observability.hub import Observability
from app.observability.summary import RETENTION_MINUTES, WINDOWS
from app.runtime import Runtime

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[AdminAuth])


def _hub(runtime: Runtime) -> Observability:
    """The hub, its batched records applied (a request answered just now is counted)."""
    if runtime.observability is None:
        raise NotReady("observability is not running yet")
    runtime.observability.flush()
    return runtime.observability


@router.get("/metrics/summary")
async def metrics_summary(runtime: RuntimeDep, window: str = "5m") -> Response:
    """Requests, success rate, latency and TTFT percentiles, errors, tokens, cost, cache."""
    if window not in WINDOWS:
        raise InvalidRequest(
            f"invalid request: window must be one of {', '.join(WINDOWS)}",
            details={"details": [{"loc": ["query", "window"], "msg": "unknown window"}]},
        )
    return json_response(_hub(runtime).summary.summary(window))


@router.get("/metrics/series")
async def metrics_series(runtime: RuntimeDep, minutes: int = 60) -> Response:
    """Per-minute requests, errors and latency p50/p95 (1 to 1,440 minutes), for charts."""
    if not 1 <= minutes <= RETENTION_MINUTES:
        raise InvalidRequest(
            f"invalid request: minutes must be 1 to {RETENTION_MINUTES}",
            details={"details": [{"loc": ["query", "minutes"], "msg": "out of range"}]},
        )
    return json_response({"minutes": minutes, "points": _hub(runtime).summary.series(minutes)})


@router.get("/errors/recent")
async def recent_errors(runtime: RuntimeDep) -> Response:
    """The last failed chat requests, newest first (type and message, never a secret)."""
    return json_response({"errors": _hub(runtime).errors.latest()})
