"""Micro-benchmark: what observability costs a chat request (run: python -m bench.observability).

Times the recording calls the middleware makes per request, and the whole edge middleware
around a trivial ASGI app (request log at INFO into a null handler, as with a real handler).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import timeit
from typing import Any

from app.api.edge import EdgeMiddleware
from app.metrics import Metrics
from app.observability import logs
from app.observability.hub import Observability
from app.observability.summary import RequestRecord
from app.usage import UsageEvent

N = 50_000
ATTEMPT = UsageEvent("alpha", 0, "alpha:0:ab", None, 3, 4, outcome="ok", seconds=0.01)


def per_call_us(fn: Any, number: int = N) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def main() -> None:
    metrics = Metrics()
    hub = Observability([], metrics)
    record = RequestRecord("/api/chat", 200, 12.5, "alpha", None, None, 0, 0.0, "miss")
    request = per_call_us(lambda: metrics.observe_request("/api/chat", "A", "alpha", 200, 0.0125))
    print(f"metrics.observe_request     {request:6.2f} us")
    print(f"metrics.observe (attempt)   {per_call_us(lambda: metrics.observe(ATTEMPT)):6.2f} us")
    print(
        f"metrics.add_cost            {per_call_us(lambda: metrics.add_cost('alpha', 0.0001)):6.2f} us"
    )
    print(f"summary.record              {per_call_us(lambda: hub.summary.record(record)):6.2f} us")
    print(
        f"middleware, log off         {asyncio.run(_middleware_us(hub, logging.WARNING)):6.2f} us per request"
    )
    print(
        f"middleware, INFO log line   {asyncio.run(_middleware_us(hub, logging.INFO)):6.2f} us per request"
    )
    json_us = asyncio.run(_middleware_us(hub, logging.INFO, json=True))
    print(f"middleware, JSON log line   {json_us:6.2f} us per request (written to /dev/null)")
    print(f"bare app (baseline)         {asyncio.run(_bare_us()):6.2f} us per request")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"x-keypool-provider", b"alpha"),
        (b"x-keypool-key-index", b"0"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


class _Runtime:
    def __init__(self, hub: Observability | None) -> None:
        self.observability = hub


def _scope(hub: Observability | None) -> dict[str, Any]:
    return {
        "type": "http",
        "path": "/api/chat",
        "method": "POST",
        "headers": [(b"x-user-id", b"ann")],
        "state": {"runtime": _Runtime(hub), "observability": hub},  # as the lifespan state
    }


async def _run(app: Any, hub: Observability | None, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    started = time.perf_counter()
    for _ in range(n):
        await app(_scope(hub), receive, send)
    return (time.perf_counter() - started) / n * 1e6


async def _middleware_us(hub: Observability, level: int, *, json: bool = False) -> float:
    log = logging.getLogger("keypool.request")
    log.setLevel(level)
    log.propagate = False
    log.handlers.clear()
    if json:  # formatted and written, as with LOG_FORMAT=json
        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - bench-long
        handler.addFilter(logs.RequestIdFilter())
        handler.setFormatter(logs.JsonFormatter())
        log.addHandler(handler)
    else:
        log.addHandler(logging.NullHandler())
    return min([await _run(EdgeMiddleware(_app), hub, 20_000) for _ in range(3)])


async def _bare_us() -> float:
    return min([await _run(_app, None, 20_000) for _ in range(3)])


if __name__ == "__main__":
    main()
