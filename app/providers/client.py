"""OpenAI-compatible chat adapter for one (provider, key, model), over the shared Transport."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from app.config import ApiKey, ProviderConfig
from app.keys.model import NO_SIGNAL, RateLimitSignal
from app.keys.signals import parse_signal
from app.providers.errors import UpstreamError, UpstreamStreamError
from app.providers.redact import client_message
from app.providers.transport import Transport, UpstreamStream


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool = False

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.estimated:
            body["estimated"] = True
        return body


@dataclass(frozen=True, slots=True)
class Completion:
    id: str
    content: str
    finish_reason: str | None
    usage: Usage | None
    raw: dict[str, Any]
    signal: RateLimitSignal


# Delta fields that mean the model has started answering, besides `content`: a tool call (often
# the whole answer, with `content` null) and the reasoning some providers stream before content.
_ANSWER_DELTAS = ("tool_calls", "function_call", "reasoning_content")


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One upstream `chat.completion.chunk`, with the raw JSON kept for /v1 relaying."""

    content: str
    finish_reason: str | None
    usage: Usage | None
    raw: dict[str, Any]
    answers: bool = False

    @property
    def is_first_token(self) -> bool:
        """Whether the upstream has committed to an answer: the point of no failover."""
        return bool(self.content) or self.answers or self.finish_reason is not None


class ProviderClient:
    """Cheap to build and built once per (provider, key) for Path A; Path B derives one per model.

    Holds only prepared headers and URLs; the pooled connection lives in the Transport.
    """

    __slots__ = ("_headers", "_transport", "_url", "key", "key_index", "model", "provider")

    def __init__(
        self, provider: ProviderConfig, key_index: int, transport: Transport, model: str
    ) -> None:
        self.provider = provider
        self.key_index = key_index
        self.key: ApiKey = provider.keys[key_index]
        self.model = model
        self._transport = transport
        self._url = f"{provider.base_url}/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {self.key.secret}",
            "Content-Type": "application/json",
            # Explicit, so aiohttp neither merges session defaults nor generates its own.
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": "keypool",
        }

    def __repr__(self) -> str:
        return f"ProviderClient({self.key.fingerprint}, model={self.model!r})"

    def with_model(self, model: str) -> ProviderClient:
        return (
            self
            if model == self.model
            else ProviderClient(self.provider, self.key_index, self._transport, model)
        )

    def _body(self, params: dict[str, Any], stream: bool) -> bytes:
        body = {**params, "model": self.model}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return orjson.dumps(body)

    def _redact(self, exc: UpstreamError) -> UpstreamError:
        """Some upstreams echo the key in their error text, which a 400 relays to the client."""
        if exc.upstream_message:
            exc.upstream_message = client_message(
                exc.upstream_message, self.key.secret, self.key.fingerprint
            )
        return exc

    async def complete(self, params: dict[str, Any]) -> Completion:
        try:
            response = await self._transport.request(
                "POST", self._url, self._headers, self._body(params, False), self.provider.timeout_s
            )
        except UpstreamError as exc:
            raise self._redact(exc) from exc.__cause__
        try:
            data = orjson.loads(response.body)
            message = data["choices"][0]["message"]
            content = message.get("content") or ""
            finish = data["choices"][0].get("finish_reason")
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamStreamError("upstream answered 200 with an unreadable body") from exc
        return Completion(
            id=str(data.get("id") or ""),
            content=content,
            finish_reason=finish,
            usage=parse_usage(data.get("usage")),
            raw=data,
            signal=parse_signal(response.headers, time.time()),
        )

    async def open_stream(self, params: dict[str, Any]) -> UpstreamChatStream:
        try:
            stream = await self._transport.open_stream(
                self._url, self._headers, self._body(params, True), self.provider.timeout_s
            )
        except UpstreamError as exc:
            raise self._redact(exc) from exc.__cause__
        return UpstreamChatStream(stream, parse_signal(stream.headers, time.time()))

    async def probe(self) -> int:
        """A cheap authenticated `GET /models`; returns the status (raises on transport failure)."""
        try:
            response = await self._transport.request(
                "GET",
                f"{self.provider.base_url}/models",
                self._headers,
                None,
                min(self.provider.timeout_s, 10.0),
            )
        except UpstreamError as exc:
            if exc.status is None:
                raise
            return exc.status
        return response.status


class UpstreamChatStream:
    """Parses an upstream SSE body into StreamChunks; `aclose` drops the connection if unfinished.

    An async iterator object rather than a generator, so an abandoned stream leaves nothing
    suspended behind it: `aclose` is the whole clean-up.
    """

    def __init__(self, stream: UpstreamStream, signal: RateLimitSignal = NO_SIGNAL) -> None:
        self._stream = stream
        self._lines = stream.lines()
        self._finished = False
        self._saw_finish = False
        self.signal = signal

    def chunks(self) -> AsyncIterator[StreamChunk]:
        return self

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self

    async def __anext__(self) -> StreamChunk:
        while not self._finished:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                self._finished = True
                if self._saw_finish:  # the answer is complete; only the [DONE] marker is missing
                    break
                raise UpstreamStreamError("upstream stream ended without [DONE]") from None
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self._finished = True
                break
            chunk = parse_chunk(data)
            self._saw_finish = self._saw_finish or chunk.finish_reason is not None
            return chunk
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._finished = True
        await self._stream.aclose()


def parse_chunk(data: bytes) -> StreamChunk:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamStreamError("upstream sent a malformed stream event") from exc
    if not isinstance(event, dict):
        raise UpstreamStreamError("upstream sent a malformed stream event")
    if event.get("error"):
        raise UpstreamStreamError("upstream reported an error mid-stream")
    choices = event.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        choice = {}
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = {}
    content = delta.get("content")
    finish = choice.get("finish_reason")
    return StreamChunk(
        content=content if isinstance(content, str) else "",
        finish_reason=str(finish) if finish else None,
        usage=parse_usage(event.get("usage")),
        raw=event,
        answers=any(delta.get(name) for name in _ANSWER_DELTAS),
    )


def parse_usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    try:
        prompt = int(raw.get("prompt_tokens") or 0)
        completion = int(raw.get("completion_tokens") or 0)
        total = int(raw.get("total_tokens") or prompt + completion)
    except (TypeError, ValueError):
        return None
    return Usage(prompt, completion, total)
