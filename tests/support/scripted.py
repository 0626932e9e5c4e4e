"""A scripted Transport for unit tests: each key answers its streams from a list of SSE lines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.chat.clients import ClientCache
from app.chat.service import ChatService
from app.config import load_settings
from app.providers.errors import UpstreamError
from app.providers.transport import Transport, UpstreamResponse, UpstreamStream
from app.state.build import build_store
from app.usage import UsageEvent

DONE = b"data: [DONE]\n"


def event(
    content: str | None = None,
    *,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    **delta: Any,
) -> bytes:
    """One upstream `data:` line of a chat.completion.chunk."""
    if content is not None:
        delta["content"] = content
    body: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n"


def answer(*pieces: str, usage: dict[str, int] | None = None) -> list[bytes]:
    """A well-formed stream: role chunk, content chunks, finish chunk, optional usage, [DONE]."""
    lines = [event("", role="assistant"), *(event(p) for p in pieces), event(finish="stop")]
    if usage:
        lines.append(event(usage=usage))
    return [*lines, DONE]


@dataclass
class ScriptedStream:
    """Yields its lines, then raises `error` (a cut) or ends; records whether it was closed."""

    script: list[bytes]
    error: UpstreamError | None = None
    headers: dict[str, str] = field(default_factory=dict)
    closed: bool = False

    def lines(self) -> AsyncIterator[bytes]:
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self.closed:
            raise StopAsyncIteration
        if self.script:
            return self.script.pop(0)
        if self.error is not None:
            raise self.error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


class ScriptedTransport:
    """`answers[key]` is what that key's next stream does: a ScriptedStream or an UpstreamError."""

    def __init__(self, answers: Mapping[str, ScriptedStream | UpstreamError]) -> None:
        self.answers = dict(answers)
        self.opened: list[ScriptedStream] = []
        self.bodies: list[dict[str, Any]] = []

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> UpstreamResponse:
        raise AssertionError("only streams are scripted")

    async def open_stream(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamStream:
        self.bodies.append(orjson.loads(body))
        outcome = self.answers[headers["Authorization"].removeprefix("Bearer ")]
        if isinstance(outcome, UpstreamError):
            raise outcome
        self.opened.append(outcome)
        return outcome

    async def aclose(self) -> None:
        return None


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


def service_over(
    transport: Transport, keys: Iterable[str], **options: Any
) -> tuple[ChatService, RecordingSink]:
    """A ChatService over one provider `alpha` (default model `m`) with these keys, in order."""
    settings = load_settings(
        {
            "ALPHA_API_KEYS": ",".join(keys),
            "ALPHA_BASE_URL": "http://alpha.invalid/v1",
            "ALPHA_DEFAULT_MODEL": "m",
        }
    )
    sink = RecordingSink()
    clients = ClientCache(settings.providers, transport)
    service = ChatService(settings.providers, clients, build_store(settings), sink=sink, **options)
    return service, sink


def scripted_service(
    answers: Mapping[str, ScriptedStream | UpstreamError],
) -> tuple[ChatService, ScriptedTransport, RecordingSink]:
    """A ChatService over one provider whose keys are `answers`' keys, in order."""
    transport = ScriptedTransport(answers)
    service, sink = service_over(transport, answers)
    return service, transport, sink
