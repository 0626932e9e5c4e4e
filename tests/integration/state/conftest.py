"""Real Redis for the state-store tests: a client and a prefix of its own for every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from app.keys.pool import KeyPool
from app.state.redis import RedisStateStore, connect
from tests.support.servers import require_service

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@dataclass(frozen=True, slots=True)
class Namespace:
    client: Redis
    prefix: str
    stores: list[RedisStateStore] = field(default_factory=list)
    url: str = REDIS_URL

    def store(self, pools: Mapping[str, KeyPool]) -> RedisStateStore:
        """One gateway instance's store in this namespace (closed after the test)."""
        store = RedisStateStore(connect(self.url, 2.0), pools, prefix=self.prefix, timeout_s=2.0)
        self.stores.append(store)
        return store

    async def keys(self) -> list[str]:
        return sorted([k.decode() async for k in self.client.scan_iter(match=f"{self.prefix}*")])


@pytest.fixture
async def redis_ns() -> AsyncIterator[Namespace]:
    """Everything written under the prefix is deleted afterwards."""
    require_service(REDIS_HOST, REDIS_PORT, "Redis")
    client = connect(REDIS_URL, 2.0)
    ns = Namespace(client, f"keypool-test:{uuid.uuid4().hex[:10]}:")
    try:
        yield ns
    finally:
        for store in ns.stores:
            await store.aclose()
        left = await ns.keys()
        if left:
            await client.delete(*left)
        await client.aclose()
