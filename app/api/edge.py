"""The outermost ASGI layer: every request's id, a chat request's record, the last line of defence.

One layer for the three jobs, on purpose: each ASGI layer is a coroutine frame that every await
of every request passes through, plus a send wrapper for every message. Measured with bench
scenario 7's side-by-side method, a layer that only passes everything on cost ~2% of one
worker's throughput; a request observer of its own beside the crash guard was one such layer.

The guard: Starlette's ServerErrorMiddleware (inside this layer) answers an unexpected exception
through our handler and then re-raises; uvicorn would log the traceback (with the exception's
text, which may quote upstream payloads) and close the connection, so a client's next pooled
request would fail with a reset. Here the exception stops, logged by type only.
"""

from __future__ import annotations

import logging
import time
from time import perf_counter
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.hub import Observability
from app.observability.logs import request_id_var
from app.observability.record import (
    CHAT_ROUTES,
    INFO_KEY,
    PRINCIPAL_KEY,
    REQUEST_ID_HEADER,
    RequestInfo,
    finish_record,
    request_id_of,
    request_info,
)

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


def _id_header(scope: Scope) -> list[tuple[bytes, bytes]]:
    info = request_info(scope)
    return [] if info is None else [(REQUEST_ID_HEADER, info.request_id.encode())]


async def _crashed(
    scope: Scope, send: Send, exc: Exception, *, started: bool, complete: bool
) -> None:
    """Log an unexpected exception once; answer 500 if nothing was sent, else end the body."""
    info = request_info(scope)
    # Type and route only: the message may carry upstream text or secrets.
    logger.error(
        "unexpected %s on %s %s request_id=%s",
        type(exc).__name__,
        scope.get("method", "WS"),
        _route_of(scope),
        info.request_id if info is not None else None,
    )
    if scope["type"] != "http" or complete:
        return
    try:
        if not started:
            headers = [*_id_header(scope), (b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            body = orjson.dumps(internal_error_body(scope.get("path", "")))
            await send({"type": "http.response.body", "body": body})
        else:
            await send({"type": "http.response.body", "body": b""})
    except Exception:  # the client is gone; nothing left to tell it
        return


class EdgeMiddleware:
    """Request ids on every answer; for chat routes the record (metrics, summary, log line);
    an unexpected exception answered 500 if nothing was sent, a started body finished, never
    re-raised."""

    observe = True  # off only in the bench's observability-free build (bench/obs_off.py)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in CHAT_ROUTES or not self.observe:
            await self._other(scope, receive, send)
            return
        # A chat request, observed here in this one frame: a helper coroutine would cost every
        # suspension of every request, not only one call.
        # `receive` is not wrapped (a wrapper per message costs every request): a client that
        # leaves before the first token gets its 499 from the route itself (api/sse.py), and
        # a committed stream that returns without its last body chunk was cut by a disconnect
        # (Starlette stops the stream when it hears `http.disconnect`), see `finish_record`.
        # Only what the answer's moments give is taken here, in closure cells (no object per
        # request); the batch reads the headers and builds the record.
        started = perf_counter()
        request_id = request_id_of(scope)
        scope[INFO_KEY] = info = RequestInfo(request_id)
        # Not reset on the way out: servers run each request in a task of its own.
        request_id_var.set(request_id)
        status = 0
        headers: Any = ()
        headers_at = 0.0
        finished = False
        error_body = b""

        async def watched_send(message: Message) -> None:
            nonlocal status, headers, headers_at, finished, error_body
            kind = message["type"]
            if kind == "http.response.start":
                headers_at = perf_counter()
                status = message["status"]
                headers = message.get("headers", ())
                # the app built this dict for this send
                message["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode())]
            elif kind == "http.response.body":
                if status >= 400 and len(error_body) < 4096:
                    error_body += message.get("body", b"")
                if not message.get("more_body", False):
                    finished = True
            await send(message)

        failed = False  # the app raised (not a disconnect: that one returns normally)
        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:  # the last line of defence, by design
            failed = True
            await _crashed(scope, send, exc, started=status != 0, complete=finished)
        except BaseException:  # cancelled: recorded, then on its way
            failed = True
            raise
        finally:
            hub: Observability | None = scope.get("state", {}).get("observability")
            if hub is not None:
                # What the record needs of the scope, flat (one tuple), so the batch does not
                # hold the scope.
                hub.deferred.call(
                    finish_record,
                    hub,
                    info,
                    scope["path"],
                    scope["method"],
                    scope["headers"],
                    scope.get(PRINCIPAL_KEY),
                    started,
                    headers_at,
                    perf_counter(),
                    time.time(),
                    status,
                    headers,
                    finished,
                    failed,
                    error_body,
                )  # see observability/deferred.py

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other route or a websocket: the id, echoed on the answer; lifespan untouched."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header: tuple[bytes, bytes] | None = None
        if self.observe:
            request_id = request_id_of(scope)
            header = (REQUEST_ID_HEADER, request_id.encode())
            scope[INFO_KEY] = RequestInfo(request_id)
            request_id_var.set(request_id)
        started = complete = False

        async def tagged(message: Message) -> None:
            nonlocal started, complete
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                started = True
                if header is not None:
                    message = {**message, "headers": [*message.get("headers", ()), header]}
            elif kind == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        except Exception as exc:  # the last line of defence, by design
            await _crashed(scope, send, exc, started=started, complete=complete)


class GuardedFastAPI(FastAPI):
    """FastAPI with EdgeMiddleware outside Starlette's own (outermost) error middleware."""

    def build_middleware_stack(self) -> ASGIApp:
        return EdgeMiddleware(super().build_middleware_stack())
