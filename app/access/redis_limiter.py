"""The user limiter shared through Redis (one Lua call, at most 61 counters a user), else local."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.access.ratelimit import (
    BUCKET_S,
    BUCKETS,
    Decision,
    SlidingWindowLimiter,
    bucket_of,
    decide,
)

logger = logging.getLogger("keypool.access")

# The local limiter's rule on one hash per user, field = bucket number, value = admissions.
# KEYS[1] the hash; ARGV: current bucket, limit, buckets before it that count, expiry in ms.
# Returns {admitted, bucket, count, bucket, count, ...}: the counted buckets (at most
# BUCKETS + 1 of them, in no order), after dropping the older ones.
BUCKET_WINDOW_LUA = """
local key = KEYS[1]
local current = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local oldest = current - tonumber(ARGV[3])
local fields = redis.call('HGETALL', key)
local out = {0}
local total = 0
local mine = nil
for i = 1, #fields, 2 do
  local bucket = tonumber(fields[i])
  if bucket < oldest then
    redis.call('HDEL', key, fields[i])
  else
    local count = tonumber(fields[i + 1])
    total = total + count
    out[#out + 1] = bucket
    out[#out + 1] = count
    if bucket == current then mine = #out end
  end
end
if total < limit then
  redis.call('HINCRBY', key, ARGV[1], 1)
  out[1] = 1
  if mine then
    out[mine] = out[mine] + 1
  else
    out[#out + 1] = current
    out[#out + 1] = 1
  end
end
redis.call('PEXPIRE', key, ARGV[4])
return out
"""
# The hash outlives its newest bucket by the window, plus a second of slack for clock skew.
EXPIRY_MS = int((BUCKETS + 2) * BUCKET_S * 1000)

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
        self._script: Any = client.register_script(BUCKET_WINDOW_LUA)
        self._down_until = 0.0
        self.degraded = False

    async def acquire(self, user_id: str, limit: int, now: float) -> Decision:
        if now < self._down_until:
            return self._local.acquire(user_id, limit, now)
        try:
            async with asyncio.timeout(self._timeout_s):  # a hung Redis must not hold requests
                raw = await self._script(
                    keys=[self._prefix + user_id],
                    args=[bucket_of(now), limit, BUCKETS, EXPIRY_MS],
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
        counts = [int(v) for v in raw[1:]]
        buckets = sorted(zip(counts[::2], counts[1::2], strict=True))
        return decide(buckets, sum(c for _, c in buckets), limit, now, bool(int(raw[0])))

    async def aclose(self) -> None:
        await self._client.aclose()
