"""Streaming chat: open upstream, wait for the first token, then commit to that key for good."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.chat.failures import Attempt
from app.chat.fallback import Lease
from app.chat.usage import estimate_usage
from app.keys.model import Outcome
from app.providers.client import ProviderClient, StreamChunk, UpstreamChatStream, Usage
from app.providers.errors import UpstreamError


class StreamInterrupted(Exception):
    """The upstream failed after the first chunk; the client gets one in-band error event."""

    def __init__(self, cause: UpstreamError) -> None:
        super().__init__(cause.reason)
        self.cause = cause


@dataclass(slots=True)
class OpenedStream:
    """An upstream stream that has produced its first token (or ended cleanly without one)."""

    upstream: UpstreamChatStream
    rest: AsyncIterator[StreamChunk]
    head: list[StreamChunk]


async def open_committable(client: ProviderClient, params: dict[str, Any]) -> OpenedStream:
    """Read until the first content (or finish) chunk; any failure before it raises for fallback."""
    upstream = await client.open_stream(params)
    rest = upstream.chunks().__aiter__()
    head: list[StreamChunk] = []
    try:
        async for chunk in rest:
            head.append(chunk)
            if chunk.is_first_token:
                break
    except BaseException:
        await upstream.aclose()
        raise
    return OpenedStream(upstream, rest, head)


class ChatStream:
    """A committed stream. Iterate it once; it settles the key's outcome and usage when it ends."""

    def __init__(
        self,
        opened: OpenedStream,
        lease: Lease,
        attempts: list[Attempt],
        params: dict[str, Any],
        path: str,
    ) -> None:
        self._opened = opened
        self._lease = lease
        self._params = params
        self.attempts = attempts
        self.path = path
        self.provider = lease.provider.name
        self.model = lease.model
        self.key_index = lease.key_index
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._text: list[str] = []

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        outcome = Outcome.CANCELLED
        try:
            for chunk in self._opened.head:
                self._observe(chunk)
                yield chunk
            async for chunk in self._opened.rest:
                self._observe(chunk)
                yield chunk
            outcome = Outcome.OK
        except UpstreamError as exc:
            outcome = exc.outcome
            raise StreamInterrupted(exc) from exc
        finally:
            await asyncio.shield(self._settle(outcome))

    def _observe(self, chunk: StreamChunk) -> None:
        if chunk.content:
            self._text.append(chunk.content)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage

    async def _settle(self, outcome: Outcome) -> None:
        await self._opened.upstream.aclose()
        if self.usage is None:
            self.usage = estimate_usage(self._params, "".join(self._text))
        await self._lease.finish(outcome, self._opened.upstream.signal, self.usage)

    async def aclose(self) -> None:
        """Abandon the stream (client gone): drop the upstream connection and release the key."""
        await asyncio.shield(self._settle(Outcome.CANCELLED))
