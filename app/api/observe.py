"""What a chat route tells the request log about its answer: path, model, upstream attempts.

The edge middleware (api/edge.py) has the line written when the answer is over; these fill the
request's `RequestInfo` (no header, nothing sent to the client).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection

from app.chat.service import ChatResult
from app.chat.streams import ChatStream
from app.observability.record import request_info


def note_answer(connection: HTTPConnection, answer: ChatResult | ChatStream) -> None:
    """`answer` is a complete result or an opened stream (its failed attempts plus the one
    that answered)."""
    info = request_info(connection.scope)
    if info is not None:
        info.path, info.model = answer.path, answer.model
        info.attempts = len(answer.attempts) + 1


def noting(
    connection: HTTPConnection, render: Callable[[ChatResult], dict[str, Any]]
) -> Callable[[ChatResult], dict[str, Any]]:
    """`render` for `cached.answer` that first notes a fresh answer in the request log line
    (a cache hit has no upstream attempt to note)."""

    def noted(result: ChatResult) -> dict[str, Any]:
        note_answer(connection, result)
        return render(result)

    return noted
