"""ResponseCache: the in-process LRU in front of the optional Redis backend, plus counters.

What the caller stores is its own business, and the rule is: only successful, non-streaming
answers, never errors. A hit is served as stored (the caller then zeroes `cost_usd`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.cache.keys import cache_key, cache_scope
from app.cache.memory import MemoryCache
from app.cache.policy import CacheResult, should_cache
from app.cache.shared import RedisCache


@dataclass(slots=True)
class CacheCounters:
    """Hits, misses and bypasses since start, for /metrics and the summary."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0

    def record(self, result: CacheResult) -> None:
        if result is CacheResult.HIT:
            self.hits += 1
        elif result is CacheResult.MISS:
            self.misses += 1
        else:
            self.bypasses += 1

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


class ResponseCache:
    """One per process. `lookup` counts a hit or a miss; `bypass` counts a request not looked up."""

    def __init__(
        self,
        memory: MemoryCache,
        shared: RedisCache | None = None,
        *,
        mode: str = "deterministic",
        scope: Literal["user", "global"] = "user",
    ) -> None:
        self.memory = memory
        self.shared = shared
        self.mode = mode
        self.scope = scope
        self.counters = CacheCounters()
        self._writes: set[asyncio.Task[None]] = set()

    def applies(self, params: Mapping[str, Any], explicit: bool | None) -> bool:
        return should_cache(self.mode, params, explicit)

    def key(
        self,
        *,
        family: str,
        route: str,
        provider: str,
        model: str,
        params: Mapping[str, Any],
        user_id: str | None,
        byok: bool = False,
    ) -> str:
        scope = cache_scope(self.scope, user_id, byok)
        return cache_key(
            family=family, route=route, provider=provider, model=model, params=params, scope=scope
        )

    def bypass(self) -> CacheResult:
        self.counters.record(CacheResult.BYPASS)
        return CacheResult.BYPASS

    async def lookup(self, key: str) -> dict[str, Any] | None:
        """The stored answer, or None (a miss). Memory first; a Redis hit refills memory."""
        raw = self.memory.get(key)
        if raw is None and self.shared is not None:
            found = await self.shared.get(key)
            if found is not None:
                raw, remaining_s = found
                self.memory.set(key, raw, remaining_s)
        if raw is None:
            self.counters.record(CacheResult.MISS)
            return None
        self.counters.record(CacheResult.HIT)
        answer: dict[str, Any] = orjson.loads(raw)
        return answer

    async def store(self, key: str, answer: Mapping[str, Any]) -> None:
        """Keep a successful non-streaming answer for the TTL (here, and in Redis if configured)."""
        raw = orjson.dumps(answer)
        self.memory.set(key, raw)
        if self.shared is not None:
            await self.shared.set(key, raw)

    def remember(self, key: str, answer: Mapping[str, Any]) -> None:
        """`store` without waiting: in memory at once, the Redis write in the background (the
        answer does not wait for it; a failed write only means a later miss)."""
        raw = orjson.dumps(answer)
        self.memory.set(key, raw)
        if self.shared is not None:
            task = asyncio.ensure_future(self._share(key, raw))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _share(self, key: str, raw: bytes) -> None:
        assert self.shared is not None
        await self.shared.set(key, raw)

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self.shared is not None:
            await self.shared.aclose()


def build_cache(
    *,
    mode: str,
    scope: Literal["user", "global"],
    ttl_s: float,
    max_entries: int,
    redis_url: str | None = None,
    prefix: str = "keypool:",
    timeout_s: float = 0.5,
) -> ResponseCache:
    """From settings: `build_cache(mode=s.cache_mode, scope=s.cache_scope, ttl_s=s.cache_ttl_s,
    max_entries=s.cache_max_entries, redis_url=..., prefix=s.keypool_redis_prefix + "cache:")`."""
    shared = None
    if redis_url is not None:
        from app.state.redis import connect

        shared = RedisCache(connect(redis_url, timeout_s), prefix, ttl_s, timeout_s)
    return ResponseCache(MemoryCache(max_entries, ttl_s), shared, mode=mode, scope=scope)
