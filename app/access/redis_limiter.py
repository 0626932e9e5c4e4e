"""The user limiter shared through Redis (one Lua round trip), degrading to the local one."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.access.ratelimit import WINDOW_S, Decision, SlidingWindowLimiter, decide

logger = logging.getLogger("keypool.access")

# KEYS[1] the user's sorted set of admission stamps; ARGV: now, limit, window, unique member.
# Returns {admitted, stamps...} with the stamps of the window oldest first (at most `limit`).
SLIDING_WINDOW_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count > limit then
  redis.call('ZREMRANGEBYRANK', key, 0, count - limit - 1)
  count = limit
end
local admitted = 0
if count < limit then
  redis.call('ZADD', key, now, ARGV[4])
  admitted = 1
end
redis.call('PEXPIRE', key, math.ceil(window * 1000))
local stamps = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local out = {admitted}
for i = 2, #stamps, 2 do out[#out + 1] = stamps[i] end
return out
"""

RETRY_REDIS_AFTER_S = 5.0


class RedisLimiter:
    """Every instance on one Redis shares each user's window: the limit holds for their sum.

    Redis errors switch to the in-process limiter (logged once) for RETRY_REDIS_AFTER_S, then
    Redis is tried again; `now` comes from the caller so tests can drive the clock.
    """

    def __init__(
        self, client: Redis, prefix: str, local: SlidingWindowLimiter, timeout_s: float = 0.5
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._prefix = prefix + "user-rpm:"
        self._local = local
        self._script: Any = client.register_script(SLIDING_WINDOW_LUA)
        self._ids = itertools.count()
        self._instance = os.urandom(6).hex()
        self._down_until = 0.0
        self.degraded = False

    async def acquire(self, user_id: str, limit: int, now: float) -> Decision:
        if now < self._down_until:
            return self._local.acquire(user_id, limit, now)
        member = f"{now:.6f}:{self._instance}:{next(self._ids)}"
        try:
            async with asyncio.timeout(self._timeout_s):  # a hung Redis must not hold requests
                raw = await self._script(
                    keys=[self._prefix + user_id], args=[repr(now), limit, WINDOW_S, member]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = now + RETRY_REDIS_AFTER_S
            if not self.degraded:
                self.degraded = True
                logger.warning(
                    "user rate limits: Redis unavailable (%s); limiting per instance until it returns",
                    type(exc).__name__,
                )
            return self._local.acquire(user_id, limit, now)
        if self.degraded:
            self.degraded = False
            logger.info("user rate limits: Redis is back; limits are shared again")
        stamps = [float(s) for s in raw[1:]]
        return decide(stamps, limit, now, bool(int(raw[0])))

    async def aclose(self) -> None:
        await self._client.aclose()
