"""RequestObserver: request ids, one log line and the metrics/summary record per chat request.

A pure ASGI middleware (no BaseHTTPMiddleware: that one buffers and costs a task per request).
It reads what the chat handlers already put on the answer (`x-keypool-*` headers) and what
they may add to `RequestInfo`, so the chat code needs no logging or metrics calls of its own.
"""

from __future__ import annotations

import time
from time import perf_counter
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
PRINCIPAL_KEY = "keypool.principal"  # set by the access middleware (api/access.py)


class RequestInfo:
    """Facts the handlers may add for the request's log line (none of them a secret).

    A plain class with class-level defaults: one is built per request, and setting only the id
    costs a third of a dataclass's __init__ assigning every field."""

    user: str | None = None
    model: str | None = None
    path: str | None = None
    attempts: int | None = None
    cost_usd: float | None = None
    error_type: str | None = None

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id


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


def _answer(
    headers: Any,
) -> tuple[str | None, str | None, str | None, str | None, float | None, bool]:
    """(provider, key index, path, cache, cost, streamed) from a chat answer's headers, parsed
    in the batch: one dict built in C, then a lookup per header (a later duplicate wins, as
    it did in the loop this replaces)."""
    found: dict[bytes, bytes] = dict(headers)
    provider = found.get(b"x-keypool-provider")
    key_index = found.get(b"x-keypool-key-index")
    path = found.get(b"x-keypool-path")
    cache = found.get(b"x-keypool-cache")
    cost = found.get(b"x-keypool-cost-usd")
    content_type = found.get(b"content-type")
    return (
        provider.decode() if provider is not None else None,
        key_index.decode() if key_index is not None else None,
        path.decode() if path is not None else None,
        cache.decode() if cache is not None else None,
        _float(cost) if cost is not None else None,
        content_type is not None and content_type.startswith(b"text/event-stream"),
    )


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
        if scope["type"] != "http" or scope["path"] not in CHAT_ROUTES:
            await self._other(scope, receive, send)
            return
        # A chat request, observed here in this one frame: every await of the request passes
        # through each coroutine frame of the middleware chain, so a helper coroutine would
        # cost every suspension of every request, not only one call.
        # `receive` is not wrapped (a wrapper per message costs every request): a client that
        # leaves before the first token gets its 499 from the route itself (api/sse.py), and
        # a committed stream that returns without its last body chunk was cut by a disconnect
        # (Starlette stops the stream when it hears `http.disconnect`), see `_finish`.
        # Only what the answer's moments give is taken here, in closure cells (no object per
        # request); the batch reads the headers and builds the record (`_finish`).
        started = perf_counter()
        request_id = _request_id(scope)
        scope[INFO_KEY] = info = RequestInfo(request_id)
        # Not reset on the way out: servers run each request in a task of its own, and the
        # error handler outside this middleware (an unexpected exception's one log line)
        # should still carry the id.
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
                message["headers"] = [*headers, (_HEADER, request_id.encode())]
            elif kind == "http.response.body":
                if status >= 400 and len(error_body) < 4096:
                    error_body += message.get("body", b"")
                if not message.get("more_body", False):
                    finished = True
            await send(message)

        failed = False  # the app raised (not a disconnect: that one returns normally)
        try:
            await self.app(scope, receive, watched_send)
        except BaseException:
            failed = True
            raise
        finally:
            hub: Observability | None = scope.get("state", {}).get("observability")
            if hub is not None:
                # What the record needs of the scope, flat (one tuple), so the batch does not
                # hold the scope.
                hub.deferred.call(
                    _finish,
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
                )  # see deferred.py

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other route or a websocket: the id, echoed on the answer; lifespan untouched."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        header = (_HEADER, request_id.encode())
        scope[INFO_KEY] = RequestInfo(request_id)
        request_id_var.set(request_id)

        async def tagged(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = _with_id(message, header)
            await send(message)

        await self.app(scope, receive, tagged)


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


def _finish(
    hub: Observability,
    info: RequestInfo,
    route: str,
    method: str,
    request_headers: list[tuple[bytes, bytes]],
    principal: Any,
    started: float,
    headers_at: float,
    ended: float,
    ended_at: float,
    sent_status: int,
    headers: Any,
    finished: bool,
    failed: bool,
    error_body: bytes,
) -> None:
    provider, key_index, answer_path, cache, answer_cost, streamed = _answer(headers)
    seconds = ended - started
    status = sent_status or 500
    if sent_status and not finished and not failed:
        status = CLIENT_CLOSED  # started, returned, never ended: the client left mid-answer
    path = info.path or answer_path or "none"
    error_type, message = (None, "")
    if status >= 400:
        error_type, message, tried = _error_fields(error_body)
        error_type = info.error_type or error_type
        if info.attempts is None:
            info.attempts = tried
        if status == CLIENT_CLOSED:
            error_type = "client_closed_request"
    cost = info.cost_usd if info.cost_usd is not None else answer_cost
    ttft_s = headers_at - started if streamed else None
    hub.record_chat_now(
        route,
        status,
        seconds,
        provider,
        path,
        ttft_s,
        error_type,
        message,
        cost,
        cache,
        info.request_id,
    )
    if not request_log.enabled():
        return
    user = info.user or _principal(principal) or _header(request_headers, b"x-user-id")
    key = hub.fingerprint(provider, key_index) if provider and key_index else None
    latency_ms = seconds * 1000
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
        f"{method} {route} {status} {latency_ms:.1f} ms id={info.request_id} "
        f"provider={provider} key={key} user={user}"
    )
    request_log.emit(message, fields, ended_at)


def _principal(principal: Any) -> str | None:
    """The authenticated user's id (never its key or token), when access control ran."""
    user = getattr(principal, "user_id", None)
    return user if isinstance(user, str) else None


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            text: str = value.decode("latin-1")
            return text[:128]
    return None
