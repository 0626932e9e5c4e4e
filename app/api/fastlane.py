"""Serve the hot routes as plain Starlette routes, ahead of their documented FastAPI twins.

The endpoints take only a `Request`, so FastAPI's per-request dependency solving (query, header
and cookie parsing, exit stacks) buys nothing; measured, it cost more than key selection itself
(and a third of a /metrics scrape). The FastAPI routes stay registered for the OpenAPI schema
and answer if this lane is removed.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Route

from app.api import chat, metrics, openai

HOT_ROUTES = (
    ("/api/chat", chat.chat, "POST"),
    ("/api/chat/stream", chat.chat_stream, "POST"),
    ("/v1/chat/completions", openai.chat_completions, "POST"),
    ("/metrics", metrics.metrics, "GET"),
)


def install_fast_routes(app: FastAPI) -> None:
    for index, (path, endpoint, method) in enumerate(HOT_ROUTES):
        route = Route(path, endpoint, methods=[method], include_in_schema=False)
        app.router.routes.insert(index, route)
