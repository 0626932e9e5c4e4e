"""CORS for the chat and /v1 routes only, from CORS_ORIGINS (`*` = any origin)."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.access import protected

ALLOW_HEADERS = ["authorization", "content-type", "x-user-id", "x-request-id"]
EXPOSE_HEADERS = [
    "x-keypool-provider",
    "x-keypool-key-index",
    "x-keypool-cost-usd",
    "x-keypool-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "retry-after",
]


def parse_origins(raw: str | None) -> list[str]:
    return [o.strip().rstrip("/") for o in (raw or "").split(",") if o.strip()]


class ChatCORSMiddleware:
    """Starlette's CORSMiddleware, applied to chat and /v1 paths; other paths pass untouched."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=ALLOW_HEADERS,
            expose_headers=EXPOSE_HEADERS,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and protected(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
