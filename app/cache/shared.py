"""Redis cache backend: shared by every instance; an unreachable Redis is a miss, never an error."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger("keypool.cache")

_FAILURES = (RedisError, OSError, TimeoutError)


class RedisCache:
    """GET/SET with PX under `prefix`; values are the bytes given (orjson from ResponseCache).

    Each call is bounded by `timeout_s`; a failure is logged once until Redis answers again.
    """

    def __init__(self, client: Redis, prefix: str, ttl_s: float, timeout_s: float = 0.5) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.timeout_s = timeout_s
        self._down = False

    async def get(self, key: str) -> tuple[bytes, float] | None:
        """The value and its remaining lifetime in seconds; None on a miss or a Redis failure."""
        try:
            async with asyncio.timeout(self.timeout_s):
                pipe = self.client.pipeline(transaction=False)
                pipe.get(self.prefix + key)
                pipe.pttl(self.prefix + key)
                value, pttl = await pipe.execute()
        except _FAILURES as exc:
            self._failed(exc)
            return None
        self._recovered()
        if value is None or pttl is None or pttl <= 0:
            return None
        return bytes(value), pttl / 1000

    async def set(self, key: str, value: bytes) -> bool:
        """Store for the TTL; False when Redis could not take it (the answer is served anyway)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.client.set(self.prefix + key, value, px=self.ttl_ms)
        except _FAILURES as exc:
            self._failed(exc)
            return False
        self._recovered()
        return True

    async def aclose(self) -> None:
        await self.client.aclose()

    def _failed(self, exc: BaseException) -> None:
        if not self._down:
            logger.warning(
                "response cache: Redis unavailable (%s); serving misses", type(exc).__name__
            )
        self._down = True

    def _recovered(self) -> None:
        if self._down:
            logger.info("response cache: Redis available again")
        self._down = False
