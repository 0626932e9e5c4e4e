"""The Redis-shared user limiter on a real Redis, with an injected clock; and its fallback."""

from __future__ import annotations

import logging
import random
import socket

import pytest

from app.access.ratelimit import SlidingWindowLimiter
from app.access.redis_limiter import RETRY_REDIS_AFTER_S, RedisLimiter
from app.state.redis import connect
from tests.support.redis_server import SHARED_URL, shared_prefix


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_two_limiters_on_one_redis_share_each_users_window():
    with shared_prefix() as prefix:
        first = RedisLimiter(connect(SHARED_URL, 0.5), prefix, SlidingWindowLimiter())
        second = RedisLimiter(connect(SHARED_URL, 0.5), prefix, SlidingWindowLimiter())
        try:
            admitted = [
                (await limiter.acquire("u", 3, 1000.0 + i)).allowed
                for i, limiter in enumerate([first, second] * 3)
            ]
            assert admitted == [True, True, True, False, False, False]
            refused = await first.acquire("u", 3, 1010.0)
            assert refused.retry_after_s == pytest.approx(51.0)  # bucket 1000 leaves at 1061
            assert refused.remaining == 0
            assert (await second.acquire("other", 3, 1010.0)).allowed
            assert not (await second.acquire("u", 3, 1060.5)).allowed
            assert (await first.acquire("u", 3, 1061.0)).allowed  # the first one has left
            assert not first.degraded
        finally:
            await first.aclose()
            await second.aclose()


async def test_an_unreachable_redis_falls_back_to_local_limits_and_logs_once(
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.WARNING, logger="keypool.access")
    limiter = RedisLimiter(
        connect(f"redis://127.0.0.1:{closed_port()}/0", 0.2), "t:", SlidingWindowLimiter()
    )
    try:
        decisions = [
            await limiter.acquire("u", 2, 100.0 + i * RETRY_REDIS_AFTER_S) for i in range(3)
        ]
    finally:
        await limiter.aclose()
    assert [d.allowed for d in decisions] == [True, True, False]
    assert limiter.degraded
    assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1


async def test_two_instances_on_one_redis_decide_as_one_local_limiter_would():
    """Same rule in Lua as in Python: 400 requests from two instances, random gaps and limits
    lowered midway, get the decisions one in-process limiter gives; no 60-s window of the
    admissions (both instances together) holds more than the limit."""
    rng = random.Random(18)
    steps = [(rng.choice([0.0, 0.05, 0.3, 0.9, 2.5, 7.0]), 7 if i < 250 else 4) for i in range(400)]
    with shared_prefix() as prefix:
        instances = [
            RedisLimiter(connect(SHARED_URL, 0.5), prefix, SlidingWindowLimiter()) for _ in range(2)
        ]
        reference = SlidingWindowLimiter()
        now, admitted, lowered_at = 5000.0, [], 0.0
        try:
            for i, (gap, limit) in enumerate(steps):
                now += gap
                lowered_at = lowered_at or (now if limit == 4 else 0.0)
                shared = await instances[i % 2].acquire("u", limit, now)
                assert shared == reference.acquire("u", limit, now)
                if shared.allowed:
                    admitted.append(now)
            assert not any(limiter.degraded for limiter in instances)
        finally:
            for limiter in instances:
                await limiter.aclose()
    assert 60 < len(admitted) < 300  # the limit was reached, and freed up again, many times
    for i, start in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t < start + 60) <= (7 if start < lowered_at else 4)


async def test_a_busy_user_keeps_at_most_61_counters_in_redis():
    with shared_prefix() as prefix:
        client = connect(SHARED_URL, 0.5)
        limiter = RedisLimiter(client, prefix, SlidingWindowLimiter())
        try:
            for i in range(150):  # one request every 0.8 s for two minutes
                assert (await limiter.acquire("busy", 1_000_000, 100.0 + i * 0.8)).allowed
            fields = await client.hlen(prefix + "user-rpm:busy")  # type: ignore[misc]
            ttl_ms = await client.pttl(prefix + "user-rpm:busy")
        finally:
            await limiter.aclose()
    assert fields <= 61
    assert 0 < ttl_ms <= 62_000  # an idle user's counters leave Redis after the window
