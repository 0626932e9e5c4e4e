"""Key pools and the state store for a configuration: what every builder of a gateway shares."""

from __future__ import annotations

import logging

from app.config import Settings
from app.keys.breaker import CircuitBreaker
from app.keys.pacing import Pace
from app.keys.pool import KeyPool
from app.keys.strategies import make_strategy
from app.state.degrading import DegradingStore
from app.state.memory import MemoryStateStore
from app.state.redis import RedisStateStore, connect, describe

logger = logging.getLogger("keypool")


def build_pools(settings: Settings) -> dict[str, KeyPool]:
    return {
        p.name: KeyPool(
            len(p.keys),
            make_strategy(settings.key_selection, p.key_weights),
            pace=Pace(p.rpm_per_key, p.tpm_per_key, burst=p.burst_per_key),
            breaker=CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_reset_s),
            shared_limit=p.shared_limit,
        )
        for p in settings.providers
    }


def build_store(settings: Settings) -> MemoryStateStore | DegradingStore:
    """In-process state, or Redis (with in-process fallback) when REDIS_URL is set.

    Several workers without Redis cannot see each other's budgets, so each keeps to its share.
    """
    workers = settings.web_concurrency
    if settings.redis_url is None:
        pools = build_pools(settings)
        if workers > 1:
            for pool in pools.values():
                pool.pace = pool.pace.shared_by(workers)
            logger.info(
                "WEB_CONCURRENCY=%d without REDIS_URL: each worker keeps its own key state and "
                "1/%d of every key's budget (set REDIS_URL to share one pool)",
                workers,
                workers,
            )
        return MemoryStateStore(pools)
    url = settings.redis_url.get_secret_value()
    client = connect(url, settings.redis_timeout_s)
    shared = RedisStateStore(
        client,
        build_pools(settings),
        prefix=settings.keypool_redis_prefix,
        timeout_s=settings.redis_timeout_s,
    )
    local = MemoryStateStore(build_pools(settings))
    return DegradingStore(
        shared,
        local,
        address=describe(url),
        peers=workers,
        spare_ttl_s=settings.redis_spare_grant_ms / 1000,
    )
