"""ChatService: the one entry point every route (and script) uses to talk to the pool."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.chat import blocking
from app.chat.clients import ClientCache
from app.chat.directory import ProviderDirectory
from app.chat.failures import Attempt
from app.chat.fallback import FallbackRunner, KeySpread, request_tokens
from app.chat.observing import ChatObserver
from app.chat.pools import PoolResolver
from app.chat.routing import Route, resolve_route
from app.chat.settlement import Settlement
from app.chat.streams import ChatStream, OpenedStream, open_committable
from app.chat.usage import GroupResolver, Pricing, answer_cost, estimate_usage
from app.config import ProviderConfig
from app.keys.backoff import WaitPolicy
from app.keys.model import Outcome
from app.model_groups import ModelGroup
from app.providers.client import Completion, ProviderClient, Usage
from app.state.base import KeyStateStore
from app.usage import UsageSink


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One chat request in transport-neutral form; `params` is the upstream body minus `model`."""

    params: dict[str, Any]
    model: str | None = None
    provider: str | None = None
    fallback: bool = True
    user_id: str | None = None
    tier: str | None = None  # the caller's tier (access layer): its weight in fair waiting
    cache: bool | None = None  # the body's `"cache"` switch (response cache; never upstream)


@dataclass(slots=True)
class ChatResult:
    completion: Completion
    provider: str
    model: str
    path: str
    key_index: int | str  # "byok": the user's own key answered
    usage: Usage
    attempts: list[Attempt] = field(default_factory=list)
    latency_ms: float = 0.0
    group: str | None = None  # the model group that served the request, if any
    cost_usd: float = 0.0  # from the final usage and the service's prices

    def as_dict(self) -> dict[str, Any]:
        """The /api/chat 200 body (DESIGN.md §3); a model group's answer also names it."""
        answer = {
            "id": self.completion.id,
            "content": self.completion.content,
            "provider": self.provider,
            "model": self.model,
            "path": self.path,
            "key_index": self.key_index,
            "usage": self.usage.as_dict(),
            "attempts": [a.as_dict() for a in self.attempts],
            "latency_ms": round(self.latency_ms, 2),
            "cost_usd": round(self.cost_usd, 10),
        }
        if self.group is not None:
            answer["group"] = self.group
        return answer


class ChatService:
    """Path A / Path B chat over the key pool; built once (see `app.chat.assembly.build_chat`).

    Everything it needs comes through the constructor: nothing reaches inside it afterwards.
    """

    def __init__(
        self,
        providers: Sequence[ProviderConfig] | ProviderDirectory,
        clients: ClientCache,
        store: KeyStateStore,
        *,
        sink: UsageSink | None = None,
        groups: GroupResolver | None = None,
        group_count: int = 1,
        rotate_providers: bool = True,
        policy: WaitPolicy | None = None,
        on_key_failure: Callable[[], None] | None = None,
        model_groups: Mapping[str, ModelGroup] | None = None,
        clock: Callable[[], float] = time.time,
        tier_weights: Mapping[str, float] | None = None,
        fair_queueing: bool = True,
        pools: PoolResolver | None = None,
        observer: ChatObserver | None = None,
        prices: Pricing | None = None,
    ) -> None:
        # The live key lists (the vault changes them while serving); `providers` reads them.
        self.directory = (
            providers if isinstance(providers, ProviderDirectory) else ProviderDirectory(providers)
        )
        self.pools = pools
        self.prices = prices  # what answers cost (`cost_usd`); None: every answer costs 0
        self.store = store
        self.clients = clients
        self.groups = groups
        self.model_groups: Mapping[str, ModelGroup] = model_groups or {}  # MODEL_GROUPS
        self.settlement = Settlement(
            store, sink, clock, on_key_failure=on_key_failure, pools=pools, observer=observer
        )
        self.runner = FallbackRunner(
            store,
            clients,
            self.settlement,
            clock,
            rotate_providers=rotate_providers,
            groups=group_count,
            policy=policy,
            fair_queueing=fair_queueing,
            pools=pools,
            on_exhausted=observer.provider_exhausted if observer is not None else None,
        )
        self.tier_weights: Mapping[str, float] = tier_weights or {}  # TIER_WEIGHTS
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def providers(self) -> tuple[ProviderConfig, ...]:
        """Every provider with its current keys (environment keys, then vault keys)."""
        return self.directory.all()

    def uses_own_key(self, user_id: str | None, provider: str) -> bool:
        """Whether this user's requests to this provider go to their own key (BYOK)."""
        return self.pools is not None and self.pools.resolve(provider, user_id).byok

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The loop the blocking entry points submit to (the server's, or a private one);
        None when it stops, so late blocking calls fail at once instead of waiting forever."""
        self._loop = loop

    def route(self, call: ChatCall) -> Route:
        return resolve_route(self.providers, call.model, call.provider, self.model_groups)

    def weight_of(self, tier: str | None) -> float:
        """A tier's weight in fair waiting; 1 for anonymous callers and unknown tiers."""
        return self.tier_weights.get(tier, 1.0) if tier is not None else 1.0

    async def _group(self, user_id: str | None) -> int | None:
        if user_id is None or self.groups is None:
            return None
        return await self.groups.group_for(user_id)

    async def complete(self, call: ChatCall, *, spread: KeySpread | None = None) -> ChatResult:
        """`spread` (batch siblings) steers this request to a key its siblings do not use."""
        started = time.perf_counter()
        route = self.route(call)

        async def attempt(client: ProviderClient) -> Completion:
            return await client.complete(call.params)

        success = await self.runner.run(
            route,
            attempt,
            fallback=call.fallback,
            group=await self._group(call.user_id),
            tokens=_token_cost(route, call.params),
            spread=spread,
            user_id=call.user_id,
            weight=self.weight_of(call.tier),
        )
        completion = success.value
        usage = completion.usage or estimate_usage(call.params, completion.content)
        await success.lease.finish(Outcome.OK, completion.signal, usage)
        return ChatResult(
            completion=completion,
            provider=success.lease.provider.name,
            model=success.lease.model,
            path=route.path,
            key_index=success.lease.label,
            usage=usage,
            attempts=success.attempts,
            latency_ms=(time.perf_counter() - started) * 1000,
            group=route.group,
            cost_usd=answer_cost(
                self.prices, success.lease.provider.name, success.lease.model, usage
            ),
        )

    async def open_stream(self, call: ChatCall) -> ChatStream:
        """Returns only once a key produced its first token; earlier failures fall over."""
        route = self.route(call)

        async def attempt(client: ProviderClient) -> OpenedStream:
            return await open_committable(client, call.params)

        success = await self.runner.run(
            route,
            attempt,
            fallback=call.fallback,
            group=await self._group(call.user_id),
            tokens=_token_cost(route, call.params),
            user_id=call.user_id,
            weight=self.weight_of(call.tier),
        )
        return ChatStream(
            success.value,
            success.lease,
            success.attempts,
            call.params,
            route.path,
            group=route.group,
            prices=self.prices,
        )

    # The four entry points of the original design; `model=None` takes Path A.

    async def chat_async(
        self, messages: list[dict[str, Any]], model: str | None = None, **options: Any
    ) -> ChatResult:
        return await self.complete(_call(messages, model, options))

    async def chat_stream_async(
        self, messages: list[dict[str, Any]], model: str | None = None, **options: Any
    ) -> AsyncIterator[str]:
        """Content pieces as they arrive; the first one comes only once a key has committed."""
        stream = await self.open_stream(_call(messages, model, options))
        try:
            async for chunk in stream:
                if chunk.content:
                    yield chunk.content
        finally:
            await stream.aclose()

    def chat(
        self, messages: list[dict[str, Any]], model: str | None = None, **options: Any
    ) -> ChatResult:
        """Blocking, for threads and scripts: runs on the service's loop while this thread waits.

        On that loop's own thread it raises RuntimeError at once rather than deadlock.
        """
        return blocking.call(self._loop, self.chat_async(messages, model, **options))

    def chat_stream(
        self, messages: list[dict[str, Any]], model: str | None = None, **options: Any
    ) -> Iterator[str]:
        """Blocking iterator of content pieces; closing it (or `break`) cancels the upstream.

        Misuse (no running service, or its own loop's thread) raises at the call; the stream
        opens at the first `next`, which raises the request's error if every key failed.
        """
        loop = blocking.check_caller(self._loop)
        return blocking.iterate(loop, self.chat_stream_async(messages, model, **options))


def _token_cost(route: Route, params: dict[str, Any]) -> int | None:
    """Only token pacing needs the estimate; skip the prompt scan when no provider paces tokens."""
    if any(p.tpm_per_key for p in route.providers):
        return request_tokens(params)
    return None


def _call(messages: list[dict[str, Any]], model: str | None, options: dict[str, Any]) -> ChatCall:
    provider = options.pop("provider", None)
    fallback = bool(options.pop("fallback", True))
    user_id = options.pop("user_id", None)
    return ChatCall({"messages": messages, **options}, model, provider, fallback, user_id)
