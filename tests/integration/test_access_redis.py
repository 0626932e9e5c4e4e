"""The Redis-shared user limiter on a real Redis, with an injected clock; and its fallback."""

from __future__ import annotations

import logging
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
            assert refused.retry_after_s == pytest.approx(50.0)
            assert refused.remaining == 0
            assert (await second.acquire("other", 3, 1010.0)).allowed
            assert (await second.acquire("u", 3, 1060.0)).allowed  # the first stamp has left
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
