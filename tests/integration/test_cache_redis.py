"""The response cache in Redis: shared by instances, and a miss (never an error) when Redis is gone."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app.cache.service import ResponseCache, build_cache
from tests.support.databases import closed_port
from tests.support.redis_server import SHARED_URL, shared_prefix

ANSWER = {"id": "c1", "content": "cached hello", "usage": {"total_tokens": 3}}


@pytest.fixture
def prefix() -> Iterator[str]:
    with shared_prefix() as p:
        yield p


def instance(prefix: str, url: str = SHARED_URL, ttl_s: float = 300) -> ResponseCache:
    return build_cache(
        mode="deterministic",
        scope="user",
        ttl_s=ttl_s,
        max_entries=100,
        redis_url=url,
        prefix=prefix,
        timeout_s=0.5,
    )


def key_for(cache: ResponseCache, user: str) -> str:
    params = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    return cache.key(
        family="chat", route="B", provider="groq", model="m", params=params, user_id=user
    )


class TestSharedCache:
    async def test_an_answer_stored_by_one_instance_is_a_hit_on_another(self, prefix: str):
        first, second = instance(prefix), instance(prefix)
        try:
            key = key_for(first, "alice")
            assert await second.lookup(key) is None
            await first.store(key, ANSWER)
            assert await second.lookup(key) == ANSWER
            assert len(second.memory) == 1  # now served from its own memory too
            assert await second.lookup(key_for(second, "bob")) is None
            assert (second.counters.hits, second.counters.misses) == (1, 2)
        finally:
            await first.aclose()
            await second.aclose()

    async def test_entries_carry_the_ttl_in_redis(self, prefix: str):
        cache = instance(prefix, ttl_s=30)
        try:
            key = key_for(cache, "alice")
            await cache.store(key, ANSWER)
            assert cache.shared is not None
            ttl_ms = await cache.shared.client.pttl(prefix + key)
            assert 0 < ttl_ms <= 30_000
        finally:
            await cache.aclose()


class TestRedisDown:
    async def test_an_unreachable_redis_is_a_miss_and_one_warning(
        self, caplog: pytest.LogCaptureFixture
    ):
        cache = instance("keypool-test:down:", url=f"redis://127.0.0.1:{closed_port()}/0")
        try:
            key = key_for(cache, "alice")
            with caplog.at_level(logging.WARNING, logger="keypool.cache"):
                assert await cache.lookup(key) is None
                await cache.store(key, ANSWER)  # no exception
                assert await cache.lookup(key_for(cache, "bob")) is None
            assert await cache.lookup(key) == ANSWER  # this instance's memory still serves
            warnings = [r for r in caplog.records if r.name == "keypool.cache"]
            assert len(warnings) == 1
            assert "Redis unavailable" in warnings[0].getMessage()
        finally:
            await cache.aclose()
