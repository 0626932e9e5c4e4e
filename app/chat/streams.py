"""Streaming chat: open upstream, wait for the first token, then commit to that key for good."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from app.chat.failures import Attempt
from app.chat.settlement import Lease
from app.chat.usage import Pricing, answer_cost, estimate_usage
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
    head: list[StreamChunk]


async def open_committable(client: ProviderClient, params: dict[str, Any]) -> OpenedStream:
    """Read until the first answer (or finish) chunk; any failure before it raises for fallback.

    Role-only and empty chunks before it are kept and replayed, so the client sees them all.
    """
    upstream = await client.open_stream(params)
    head: list[StreamChunk] = []
    try:
        async for chunk in upstream:
            head.append(chunk)
            if chunk.is_first_token:
                break
    except BaseException:
        await upstream.aclose()
        raise
    return OpenedStream(upstream, head)


class ChatStream:
    """A committed stream: iterate it once. It settles the key's outcome and usage exactly once,
    when the upstream ends, fails, or the consumer goes away (`aclose`, or cancellation).

    An async iterator object rather than a generator: every way out runs `_finish` directly,
    and an abandoned stream leaves no suspended frame for the garbage collector to clean up.
    """

    def __init__(
        self,
        opened: OpenedStream,
        lease: Lease,
        attempts: list[Attempt],
        params: dict[str, Any],
        path: str,
        *,
        group: str | None = None,
        prices: Pricing | None = None,
    ) -> None:
        self._upstream = opened.upstream
        self._prices = prices
        self._head = deque(opened.head)
        self._lease = lease
        self._params = params
        self._settling: asyncio.Future[None] | None = None
        self.attempts = attempts
        self.path = path
        self.group = group  # the model group that served the stream, if any
        self.provider = lease.provider.name
        self.model = lease.model
        self.key_index = lease.key_index
        self.id: str | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._text: list[str] = []

    @property
    def cost_usd(self) -> float:
        """The answer's cost once the stream has ended (from its final usage); 0 before."""
        return answer_cost(self._prices, self.provider, self.model, self.usage)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._settling is not None:
            raise StopAsyncIteration
        if self._head:
            chunk = self._head.popleft()
        else:
            chunk = await self._next_upstream()
        self._observe(chunk)
        return chunk

    async def _next_upstream(self) -> StreamChunk:
        try:
            return await self._upstream.__anext__()
        except StopAsyncIteration:
            await self._finish(Outcome.OK)
            raise
        except UpstreamError as exc:
            await self._finish(exc.outcome)
            raise StreamInterrupted(exc) from exc
        except BaseException:
            await self._finish(Outcome.CANCELLED)
            raise

    def _observe(self, chunk: StreamChunk) -> None:
        if self.id is None and chunk.raw.get("id"):
            self.id = str(chunk.raw["id"])
        if chunk.content:
            self._text.append(chunk.content)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage

    async def _finish(self, outcome: Outcome) -> None:
        # The first caller decides the outcome. Settling runs as its own task under a shield,
        # so a cancelled consumer (client gone) still releases the key and records the usage.
        if self._settling is None:
            self._settling = asyncio.ensure_future(self._settle(outcome))
        await asyncio.shield(self._settling)

    async def _settle(self, outcome: Outcome) -> None:
        await self._upstream.aclose()
        if self.usage is None:
            self.usage = estimate_usage(self._params, "".join(self._text))
        await self._lease.finish(outcome, self._upstream.signal, self.usage)

    async def aclose(self) -> None:
        """Abandon the stream (client gone): drop the upstream connection and release the key.

        A no-op once the stream has ended by itself.
        """
        await self._finish(Outcome.CANCELLED)
