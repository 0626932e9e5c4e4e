"""RequestObserver: request ids, one log line and the metrics/summary record per chat request.

A pure ASGI middleware (no BaseHTTPMiddleware: that one buffers and costs a task per request).
It reads what the chat handlers already put on the answer (`x-keypool-*` headers) and what
they may add to `RequestInfo`, so the chat code needs no logging or metrics calls of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.hub import Observability
from app.observability.logs import new_request_id, request_id_var
from app.observability.requestlog import request_log

CHAT_ROUTES = frozenset(
    {"/api/chat", "/api/chat/stream", "/api/chat/batch", "/v1/chat/completions"}
)
INFO_KEY = "keypool.request"
MAX_REQUEST_ID = 128
CLIENT_CLOSED = 499
_HEADER = b"x-request-id"


@dataclass(slots=True)
class RequestInfo:
    """Facts the handlers may add for the request's log line (none of them a secret)."""

    request_id: str
    user: str | None = None
    model: str | None = None
    path: str | None = None
    attempts: int | None = None
    cost_usd: float | None = None
    error_type: str | None = None


def request_info(scope: Scope) -> RequestInfo | None:
    """The current request's RequestInfo (from a handler: `request_info(request.scope)`)."""
    info: RequestInfo | None = scope.get(INFO_KEY)
    return info


def accepted_request_id(value: bytes) -> str | None:
    """A client's X-Request-Id if it is 1-128 printable ASCII characters, else None."""
    if not 0 < len(value) <= MAX_REQUEST_ID:
        return None
    if any(byte < 0x20 or byte > 0x7E for byte in value):
        return None
    text = value.decode().strip()
    return text or None


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _HEADER:
            return accepted_request_id(value) or new_request_id()
    return new_request_id()


@dataclass(slots=True)
class _Answer:
    """What the middleware saw of one chat answer."""

    started: float
    route: str = ""
    method: str = ""
    user: str | None = None
    seconds: float = 0.0
    ended_at: float = 0.0  # wall clock, for the log line's time
    status: int = 0
    provider: str | None = None
    key_index: str | None = None
    path: str | None = None
    cache: str | None = None
    cost: float | None = None
    ttft_ms: float | None = None
    error_body: bytes = b""
    finished: bool = False
    failed: bool = False  # the app raised (not a disconnect: that one returns normally)

    def read_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        for name, value in headers:
            if not name.startswith(b"x-keypool-"):
                if name == b"content-type" and value.startswith(b"text/event-stream"):
                    self.ttft_ms = (time.perf_counter() - self.started) * 1000
                continue
            if name == b"x-keypool-provider":
                self.provider = value.decode()
            elif name == b"x-keypool-key-index":
                self.key_index = value.decode()
            elif name == b"x-keypool-path":
                self.path = value.decode()
            elif name == b"x-keypool-cache":
                self.cache = value.decode()
            elif name == b"x-keypool-cost-usd":
                self.cost = _float(value)


def _float(value: bytes) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _with_id(message: Message, header: tuple[bytes, bytes]) -> Message:
    return {**message, "headers": [*message.get("headers", ()), header]}


class RequestObserver:
    """Request ids on every answer; for chat routes also metrics, summary and one log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        header = (_HEADER, request_id.encode())
        scope[INFO_KEY] = info = RequestInfo(request_id)
        # Not reset on the way out: servers run each request in a task of its own, and the
        # error handler outside this middleware (an unexpected exception's one log line)
        # should still carry the id.
        request_id_var.set(request_id)
        if scope["type"] == "http" and scope["path"] in CHAT_ROUTES:
            await self._observe(scope, receive, send, header, info)
        else:
            await self._tag(scope, receive, send, header)

    async def _tag(self, scope: Scope, receive: Receive, send: Send, header: Any) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = _with_id(message, header)
            await send(message)

        await self.app(scope, receive, tagged)

    async def _observe(
        self, scope: Scope, receive: Receive, send: Send, header: Any, info: RequestInfo
    ) -> None:
        # `receive` is not wrapped (a wrapper per message costs every request): a client that
        # leaves before the first token gets its 499 from the route itself (api/sse.py), and
        # a committed stream that returns without its last body chunk was cut by a disconnect
        # (Starlette stops the stream when it hears `http.disconnect`), see `_finish`.
        answer = _Answer(time.perf_counter())

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                headers = message.get("headers", ())
                answer.read_headers(headers)
                message["headers"] = [*headers, header]  # the app built this dict for this send
            elif message["type"] == "http.response.body":
                if answer.status >= 400 and len(answer.error_body) < 4096:
                    answer.error_body += message.get("body", b"")
                if not message.get("more_body", False):
                    answer.finished = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except BaseException:
            if not answer.status:
                answer.status = 500
            answer.failed = True
            raise
        finally:
            hub = _hub(scope)
            if hub is not None:
                answer.seconds = time.perf_counter() - answer.started
                answer.ended_at = time.time()
                # What the record needs of the scope, so the batch does not hold the scope.
                answer.route, answer.method = scope["path"], scope["method"]
                answer.user = info.user or _principal(scope) or _header(scope, b"x-user-id")
                hub.deferred.call(_finish, hub, answer, info)  # see deferred.py


def _hub(scope: Scope) -> Observability | None:
    hub: Observability | None = scope.get("state", {}).get("observability")
    return hub


def _error_fields(body: bytes) -> tuple[str | None, str, int | None]:
    """(keypool error type, message, upstream attempts listed) of an error answer; /v1
    carries the type in `code`."""
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return None, "", None
    if not isinstance(error, dict):
        return None, "", None
    kind = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
    attempts = error.get("attempts")
    tried = len(attempts) if isinstance(attempts, list) else None
    return (kind if isinstance(kind, str) else None), str(error.get("message", ""))[:300], tried


def _finish(hub: Observability, answer: _Answer, info: RequestInfo) -> None:
    seconds = answer.seconds
    status = answer.status or 500
    if answer.status and not answer.finished and not answer.failed:
        status = CLIENT_CLOSED  # started, returned, never ended: the client left mid-answer
    route = answer.route
    path = info.path or answer.path or "none"
    error_type, message = (None, "")
    if status >= 400:
        error_type, message, tried = _error_fields(answer.error_body)
        error_type = info.error_type or error_type
        if info.attempts is None:
            info.attempts = tried
        if status == CLIENT_CLOSED:
            error_type = "client_closed_request"
    cost = info.cost_usd if info.cost_usd is not None else answer.cost
    hub.record_chat_now(
        route,
        status,
        seconds,
        answer.provider,
        path,
        None if answer.ttft_ms is None else answer.ttft_ms / 1000,
        error_type,
        message,
        cost,
        answer.cache,
        info.request_id,
    )
    latency_ms = seconds * 1000
    _log(hub, answer, info, status, latency_ms, path)


def _log(
    hub: Observability,
    answer: _Answer,
    info: RequestInfo,
    status: int,
    latency_ms: float,
    path: str,
) -> None:
    if not request_log.enabled():
        return
    user = answer.user  # info.user included (read when the answer ended)
    provider = answer.provider
    key = hub.fingerprint(provider, answer.key_index) if provider and answer.key_index else None
    route = answer.route
    fields = {
        "request_id": info.request_id,
        "route": route,
        "path": path,
        "provider": provider,
        "model": info.model,
        "key": key,
        "status": status,
        "latency_ms": round(latency_ms, 2),
        "attempts": info.attempts,
        "user": user,
    }
    message = (
        f"{answer.method} {route} {status} {latency_ms:.1f} ms id={info.request_id} "
        f"provider={provider} key={key} user={user}"
    )
    request_log.emit(message, fields, answer.ended_at)


PRINCIPAL_KEY = "keypool.principal"  # set by the access middleware (api/access.py)


def _principal(scope: Scope) -> str | None:
    """The authenticated user's id (never its key or token), when access control ran."""
    user = getattr(scope.get(PRINCIPAL_KEY), "user_id", None)
    return user if isinstance(user, str) else None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            text: str = value.decode("latin-1")
            return text[:128]
    return None
