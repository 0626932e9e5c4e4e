"""Websocket chat requests observed as the HTTP ones are: an id, metrics, summary, a log line.

The edge middleware (api/edge.py) sees a websocket as one long connection; the requests are the
frames. Each frame gets its own request id (the frame's `request_id` when it is a short printable
string, else a generated one), carried by every event answering it and by every log line written
while serving it, and each request is recorded with route "/api/chat/ws" when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from app.observability.hub import Observability
from app.observability.logs import new_request_id, request_id_var
from app.observability.record import PRINCIPAL_KEY, accepted_request_id, write_line
from app.observability.requestlog import request_log

WS_ROUTE = "/api/chat/ws"
CLIENT_CLOSED = 499
STREAM_FAILED = 502  # an upstream stream broke after it started (SSE would be a 200 by then)


def principal_of(scope: Mapping[str, Any]) -> str | None:
    """The user the access middleware authenticated for this socket, if it ran."""
    user = getattr(scope.get(PRINCIPAL_KEY), "user_id", None)
    return user if isinstance(user, str) else None


def frame_request_id(value: object) -> str:
    """The frame's own id if usable (1-128 printable ASCII characters), else a new one."""
    if isinstance(value, str):
        accepted = accepted_request_id(value.encode("utf-8", "replace"))
        if accepted is not None:
            return accepted
    return new_request_id()


class WsRequest:
    """One websocket request from frame to last event; `tag` every event, then `finish` once."""

    __slots__ = (
        "attempts",
        "error_type",
        "key_index",
        "message",
        "model",
        "path",
        "principal",
        "provider",
        "request_id",
        "started",
        "status",
        "ttft_s",
        "user",
    )

    def __init__(self, user: str | None, principal: str | None = None) -> None:
        self.started = time.perf_counter()
        self.request_id = new_request_id()
        self.principal = principal  # authenticated: the frame cannot name another user
        self.user = principal or user
        self.status = 200
        self.provider: str | None = None
        self.key_index: int | None = None
        self.path: str | None = None
        self.model: str | None = None
        self.attempts: int | None = None
        self.ttft_s: float | None = None
        self.error_type: str | None = None
        self.message = ""
        request_id_var.set(self.request_id)  # this frame's task: its log lines carry the id

    def adopt(self, frame: dict[str, Any]) -> None:
        """The frame's own `request_id` (when usable) and user (unless authenticated)."""
        if "request_id" in frame:
            self.request_id = frame_request_id(frame["request_id"])
            request_id_var.set(self.request_id)
        user = frame.get("user_id")
        if isinstance(user, str) and user and self.principal is None:
            self.user = user[:128]

    def tag(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event with this request's id; notes what it says about the answer."""
        kind = event.get("type")
        if kind == "start":
            self.ttft_s = time.perf_counter() - self.started
            self.provider, self.key_index = event.get("provider"), event.get("key_index")
            self.path, self.model = event.get("path"), event.get("model")
            self.attempts = len(event.get("attempts") or ()) + 1
        elif kind == "error":
            error = event.get("error") or {}
            self.status = int(event.get("status") or STREAM_FAILED)
            self.error_type = error.get("type")
            self.message = str(error.get("message", ""))[:300]
        return {**event, "request_id": self.request_id}

    def finish(self, hub: Observability | None, *, gone: bool = False) -> None:
        """Record the request (metrics, summary, recent errors) and write its one log line."""
        if gone:
            self.status, self.error_type = CLIENT_CLOSED, "client_closed_request"
        if hub is None:
            return
        seconds = time.perf_counter() - self.started
        hub.record_chat(
            WS_ROUTE,
            self.status,
            seconds,
            provider=self.provider,
            path=self.path,
            ttft_s=self.ttft_s,
            error_type=self.error_type,
            message=self.message,
            request_id=self.request_id,
        )
        if request_log.enabled():
            index = str(self.key_index) if self.key_index is not None else None
            write_line(
                hub,
                "WS",
                WS_ROUTE,
                self.status,
                seconds * 1000,
                self.request_id,
                self.path or "none",
                self.provider,
                index,
                self.model,
                self.attempts,
                self.user,
            )
