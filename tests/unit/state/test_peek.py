"""Reading a key's state after a release: free for in-process pools, never a Redis round trip."""

from __future__ import annotations

import random

from app.keys.breaker import CircuitBreaker
from app.keys.model import Ask, Outcome, Release
from app.keys.pool import KeyPool
from app.keys.strategies import RoundRobin
from app.state.degrading import DegradingStore
from app.state.memory import MemoryStateStore
from app.state.peek import local_view
from app.state.redis import RedisStateStore, connect

NOW = 1_000.0


def memory() -> MemoryStateStore:
    pool = KeyPool(2, RoundRobin(), breaker=CircuitBreaker(1, 60))
    return MemoryStateStore({"alpha": pool}, rng=random.Random(0))


async def test_in_process_pools_are_read_directly():
    store = memory()
    peek = local_view(store)
    assert peek is not None
    assert peek("alpha", 0, NOW) == ("active", "closed")
    await store.acquire("alpha", NOW, Ask())
    await store.release(Release("alpha", 0, Outcome.SERVER_ERROR, NOW))
    assert peek("alpha", 0, NOW) == ("active", "open")
    assert peek("alpha", 9, NOW) is None  # an index the pool does not have
    assert peek("beta", 0, NOW) is None


async def test_a_shared_store_is_read_only_while_it_serves_from_local_pools():
    local = memory()
    shared = RedisStateStore(connect("redis://127.0.0.1:1/0", 0.1), local.pools)
    store = DegradingStore(shared, local, address="redis://127.0.0.1:1/0")
    peek = local_view(store)
    assert peek is not None
    assert store.redis_status() == "down"  # never connected: local pools are the state
    assert peek("alpha", 0, NOW) == ("active", "closed")
    store._up = True  # as after a successful connection
    assert peek("alpha", 0, NOW) is None  # the local copy may lag: the watcher reports
    await shared.aclose()
