"""A Transport for unit tests that answers plain requests by key: a status and a JSON body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from app.keys.model import NO_SIGNAL
from app.providers.errors import error_for_status
from app.providers.transport import UpstreamResponse, UpstreamStream


def completion(content: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-answering",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


class AnsweringTransport:
    """`answers[key]` is (status, body) for every request made with that key; non-2xx raise the
    typed upstream error, as the real transport does."""

    def __init__(self, answers: Mapping[str, tuple[int, dict[str, Any]]]) -> None:
        self.answers = dict(answers)
        self.requests: list[tuple[str, str, str]] = []  # (method, url, key)

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> UpstreamResponse:
        key = headers["Authorization"].removeprefix("Bearer ")
        self.requests.append((method, url, key))
        status, payload = self.answers[key]
        if not 200 <= status < 300:
            raise error_for_status(status, NO_SIGNAL, None)
        return UpstreamResponse(status, {}, orjson.dumps(payload))

    async def open_stream(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamStream:
        raise AssertionError("only plain requests are answered here")

    async def aclose(self) -> None:
        return None
