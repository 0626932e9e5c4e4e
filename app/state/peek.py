"""A key's state and its provider's breaker right after a release, when reading them is free.

The settlement hook logs a key's state change and a breaker transition at the moment they
happen; that must not cost a round trip. In-process pools are read directly; a Redis-backed
store is read from its local pools only while it serves from them (Redis down): while Redis
serves, the local copy lags by up to a heartbeat, so nothing is reported and the pool watcher
(one snapshot a second) reports the change instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from app.keys.pool import KeyPool
from app.state.base import KeyStateStore
from app.state.degrading import DegradingStore
from app.state.memory import MemoryStateStore

# (provider, key index, now) -> (key state, circuit state), or None when not known cheaply.
Peek = Callable[[str, int, float], tuple[str, str] | None]


def read_pools(
    pools: Mapping[str, KeyPool], provider: str, index: int, now: float
) -> tuple[str, str] | None:
    pool = pools.get(provider)
    if pool is None or not 0 <= index < len(pool.statuses):
        return None
    return pool.statuses[index].effective_state(now).value, pool.breaker.state(now).value


def local_view(store: KeyStateStore) -> Peek | None:
    """A peek for `store`, or None when its state is never local (then report nothing)."""
    if isinstance(store, MemoryStateStore):
        pools = store.pools
        return lambda provider, index, now: read_pools(pools, provider, index, now)
    if isinstance(store, DegradingStore):
        degrading, local = store, store.local.pools

        def peek(provider: str, index: int, now: float) -> tuple[str, str] | None:
            if degrading.redis_status() == "ok":
                return None
            return read_pools(local, provider, index, now)

        return peek
    return None
