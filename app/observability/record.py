"""A chat request's record: its id, the facts handlers add, and what the batch makes of it.

The edge middleware (api/edge.py) takes an answer's moments and hands them to `finish_record`
in the observability batch, which reads what the chat handlers already put on the answer
(`x-keypool-*` headers) and what they may add to `RequestInfo`: the chat code needs no logging
or metrics calls of its own.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import Scope

from app.observability.hub import Observability
from app.observability.logs import new_request_id
from app.observability.requestlog import REQUEST_LOGGER, request_log

CHAT_ROUTES = frozenset(
    {"/api/chat", "/api/chat/stream", "/api/chat/batch", "/v1/chat/completions"}
)
INFO_KEY = "keypool.request"
MAX_REQUEST_ID = 128
CLIENT_CLOSED = 499
REQUEST_ID_HEADER = b"x-request-id"
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


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-Id if acceptable, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return accepted_request_id(value) or new_request_id()
    return new_request_id()


def answer_facts(
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


def finish_record(
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
    """Record one answered chat request: metrics, summary, recent errors and its log line."""
    provider, key_index, answer_path, cache, answer_cost, streamed = answer_facts(headers)
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
    write_line(
        hub,
        method,
        route,
        status,
        seconds * 1000,
        info.request_id,
        path,
        provider,
        key_index,
        info.model,
        info.attempts,
        user,
        ended_at,
    )


def write_line(
    hub: Observability,
    method: str,
    route: str,
    status: int,
    latency_ms: float,
    request_id: str,
    path: str,
    provider: str | None,
    key_index: str | None,
    model: str | None,
    attempts: int | None,
    user: str | None,
    now: float | None = None,
) -> None:
    """A chat request's one log line (HTTP here, each websocket frame in api/ws_observe.py)."""
    key = hub.fingerprint(provider, key_index) if provider and key_index else None
    if request_log.json:
        # JSON: the fields carry the details, the message only says what the line is about (a
        # shorter line, and one long f-string less per request).
        message = f"{method} {route} {status}"
    else:
        message = (
            f"{method} {route} {status} {latency_ms:.1f} ms id={request_id} "
            f"provider={provider} key={key} user={user}"
        )
    request_log.emit(
        {
            "time": time.time() if now is None else now,
            "level": "INFO",
            "logger": REQUEST_LOGGER,
            "message": message,
            "request_id": request_id,
            "route": route,
            "path": path,
            "provider": provider,
            "model": model,
            "key": key,
            "status": status,
            "latency_ms": int(latency_ms * 100 + 0.5) / 100,  # round(x, 2) of x >= 0, 0.15 us less
            "attempts": attempts,
            "user": user,
        }
    )


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
