"""ResponseCache in process: hit, miss, bypass counters; answers come back equal, not shared."""

from __future__ import annotations

import time

from app.cache.memory import MemoryCache
from app.cache.policy import CacheResult
from app.cache.service import ResponseCache

ANSWER = {"id": "c1", "content": "hello", "usage": {"total_tokens": 3}}


def cache(clock: list[float] | None = None) -> ResponseCache:
    now = clock or [0.0]
    return ResponseCache(MemoryCache(10, 60, clock=lambda: now[0]))


def request_key(c: ResponseCache, user: str | None, content: str = "hi") -> str:
    return c.key(
        family="chat",
        route="B",
        provider="groq",
        model="m",
        params={"messages": [{"role": "user", "content": content}], "temperature": 0},
        user_id=user,
    )


class TestResponseCache:
    async def test_miss_then_hit_and_the_counters(self):
        c = cache()
        key = request_key(c, "alice")
        assert await c.lookup(key) is None
        await c.store(key, ANSWER)
        assert await c.lookup(key) == ANSWER
        assert c.bypass() is CacheResult.BYPASS
        assert (c.counters.hits, c.counters.misses, c.counters.bypasses) == (1, 1, 1)
        assert c.counters.hit_rate == 0.5

    async def test_a_hit_is_a_copy_the_caller_may_change(self):
        c = cache()
        key = request_key(c, "alice")
        await c.store(key, ANSWER)
        first = await c.lookup(key)
        assert first is not None
        first["content"] = "changed"
        assert await c.lookup(key) == ANSWER

    async def test_one_user_never_gets_another_users_answer(self):
        c = cache()
        await c.store(request_key(c, "alice"), ANSWER)
        assert await c.lookup(request_key(c, "bob")) is None
        assert await c.lookup(request_key(c, None)) is None

    async def test_expired_answers_are_misses(self):
        now = [0.0]
        c = cache(now)
        key = request_key(c, "alice")
        await c.store(key, ANSWER)
        now[0] = 61
        assert await c.lookup(key) is None

    async def test_a_hit_costs_microseconds(self):
        c = cache()
        key = request_key(c, "alice")
        await c.store(key, ANSWER)
        rounds = 2000
        started = time.perf_counter()
        for _ in range(rounds):
            await c.lookup(key)
        per_hit = (time.perf_counter() - started) / rounds
        assert per_hit < 100e-6, f"{per_hit * 1e6:.1f} us per hit"
