"""The in-process LRU: TTL with an injected clock, a size bound, least recently used out first."""

from __future__ import annotations

import pytest

from app.cache.memory import MemoryCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


class TestMemoryCache:
    def test_hit_then_expiry_after_the_ttl(self, clock: Clock):
        cache = MemoryCache(10, ttl_s=300, clock=clock)
        cache.set("k", b"v")
        clock.now += 299.9
        assert cache.get("k") == b"v"
        clock.now += 0.1
        assert cache.get("k") is None
        assert len(cache) == 0

    def test_a_shorter_ttl_per_entry(self, clock: Clock):
        cache = MemoryCache(10, ttl_s=300, clock=clock)
        cache.set("k", b"v", ttl_s=5)
        clock.now += 5
        assert cache.get("k") is None

    def test_size_bound_drops_the_least_recently_used(self, clock: Clock):
        cache = MemoryCache(2, ttl_s=300, clock=clock)
        cache.set("a", b"1")
        cache.set("b", b"2")
        assert cache.get("a") == b"1"  # a is now the most recent
        cache.set("c", b"3")
        assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1", None, b"3")
        assert len(cache) == 2

    def test_overwriting_keeps_one_entry(self, clock: Clock):
        cache = MemoryCache(2, ttl_s=300, clock=clock)
        cache.set("a", b"1")
        cache.set("a", b"2")
        assert (len(cache), cache.get("a")) == (1, b"2")

    def test_zero_entries_is_refused(self):
        with pytest.raises(ValueError, match="max_entries"):
            MemoryCache(0, ttl_s=1)
