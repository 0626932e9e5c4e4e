"""The outermost ASGI layer: an unexpected exception becomes a 500 answer and one log line.

Starlette's ServerErrorMiddleware answers through our handler and then re-raises; uvicorn then
logs the traceback (with the exception's text, which may quote upstream payloads) and closes
the connection, so a client's next pooled request fails with a reset. Here the exception stops.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.middleware import request_info

logger = logging.getLogger("keypool.api")


def internal_error_body(path: str) -> dict[str, object]:
    message = "internal error; the request was not completed"
    if path.startswith("/v1/"):
        return {
            "error": {
                "message": message,
                "type": "api_error",
                "param": None,
                "code": "internal_error",
            }
        }
    return {"error": {"type": "internal_error", "message": message}}


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", None) or scope.get("path", "?"))


def _request_id(scope: Scope) -> str | None:
    info = request_info(scope)  # RequestObserver (inside this guard) set it if it ran
    if info is not None:
        return info.request_id
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return str(value.decode("latin-1"))[:64]
    return None


def _id_header(scope: Scope) -> list[tuple[bytes, bytes]]:
    info = request_info(scope)
    return [] if info is None else [(b"x-request-id", info.request_id.encode())]


def _with_request_id(message: Message, scope: Scope) -> Message:
    """A 500 sent outside RequestObserver (Starlette's error middleware) still carries its id."""
    headers = list(message.get("headers", ()))
    if any(name == b"x-request-id" for name, _ in headers):
        return message
    return {**message, "headers": headers + _id_header(scope)}


class CrashGuardMiddleware:
    """Catch, answer 500 if nothing was sent yet, finish a started body, never re-raise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False
        complete = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, complete
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 500:
                    message = _with_request_id(message, scope)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # the last line of defence, by design
            # Type and route only: the message may carry upstream text or secrets.
            logger.error(
                "unexpected %s on %s %s request_id=%s",
                type(exc).__name__,
                scope.get("method", "WS"),
                _route_of(scope),
                _request_id(scope),
            )
            if scope["type"] != "http" or complete:
                return
            try:
                if not started:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 500,
                            "headers": [*_id_header(scope), (b"content-type", b"application/json")],
                        }
                    )
                    body = orjson.dumps(internal_error_body(scope.get("path", "")))
                    await send({"type": "http.response.body", "body": body})
                else:
                    await send({"type": "http.response.body", "body": b""})
            except Exception:  # the client is gone; nothing left to tell it
                return


class GuardedFastAPI(FastAPI):
    """FastAPI with CrashGuardMiddleware outside Starlette's own (outermost) error middleware."""

    def build_middleware_stack(self) -> ASGIApp:
        return CrashGuardMiddleware(super().build_middleware_stack())
