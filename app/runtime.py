"""Everything long-lived that a gateway process owns, built and closed by the lifespan."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from app.chat.recovery import KeyProber
from app.chat.service import ChatService
from app.config import Settings
from app.db.migrate import upgrade_async
from app.db.session import create_engine, create_sessionmaker, mask_url
from app.db.spool import Spool
from app.db.stats_writer import StatsWriter
from app.db.user_groups import UserGroupService
from app.keys.backoff import WaitPolicy
from app.keys.breaker import CircuitBreaker
from app.keys.pacing import Pace
from app.keys.pool import KeyPool
from app.keys.strategies import make_strategy
from app.metrics import MeteredSink, Metrics
from app.providers.transport import AiohttpTransport
from app.state.base import KeyStateStore
from app.state.degrading import DegradingStore
from app.state.memory import MemoryStateStore
from app.state.redis import RedisStateStore, connect, describe

logger = logging.getLogger("keypool")


@dataclass(slots=True)
class Runtime:
    settings: Settings
    service: ChatService
    store: KeyStateStore
    transport: AiohttpTransport
    engine: AsyncEngine
    stats: StatsWriter
    groups: UserGroupService
    prober: KeyProber
    metrics: Metrics = field(default_factory=Metrics)
    ready: bool = False
    draining: bool = False
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def redis_status(self) -> str:
        """ "off" without REDIS_URL; else whether the shared state is in use right now."""
        if isinstance(self.store, DegradingStore):
            return self.store.redis_status()
        return "off"

    async def aclose(self) -> None:
        """Drain: stop background work, flush stats and user groups, close pools."""
        self.draining = True
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.groups.aclose()
        await self.stats.aclose()
        await self.store.aclose()
        await self.transport.aclose()
        await self.engine.dispose()


def build_pools(settings: Settings) -> dict[str, KeyPool]:
    return {
        p.name: KeyPool(
            len(p.keys),
            make_strategy(settings.key_selection, p.key_weights),
            pace=Pace(p.rpm_per_key, p.tpm_per_key),
            breaker=CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_reset_s),
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
    return DegradingStore(shared, local, address=describe(url), peers=workers)


async def migrate(settings: Settings) -> None:
    if not settings.db_auto_migrate:
        return
    try:
        await upgrade_async(settings.database_url)
    except Exception as exc:  # the gateway serves chat with the database down (DESIGN.md §3)
        logger.warning(
            "database %s not migrated (%s); serving without it, stats wait in memory",
            mask_url(settings.database_url),
            type(exc).__name__,
        )


async def build_runtime(settings: Settings) -> Runtime:
    transport = AiohttpTransport()
    for provider in settings.providers:
        transport.open_session(provider.base_url)
    await migrate(settings)
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    spool = Spool(settings.stats_spool_path)
    stats = StatsWriter(sessions, flush_interval_s=settings.stats_flush_interval_s, spool=spool)
    metrics = Metrics()
    groups = UserGroupService(
        sessions, settings.groups, spool=spool, new_users_per_minute=settings.new_users_per_minute
    )
    await stats.start()
    await groups.start()
    store = build_store(settings)
    if isinstance(store, DegradingStore):
        await store.start()
    service = ChatService(
        settings.providers,
        transport,
        store,
        sink=MeteredSink(stats, metrics),
        groups=groups,
        group_count=settings.groups,
        rotate_providers=settings.provider_rotation == "round_robin",
    )
    service.bind_loop(asyncio.get_running_loop())
    prober = KeyProber(
        settings.providers,
        store,
        service.clients,
        interval_s=settings.probe_interval_s,
        min_active_keys=settings.min_active_keys,
    )
    service.runner.on_key_failure = prober.nudge
    service.runner.policy = WaitPolicy(
        deadline_s=settings.request_deadline_s, queue_s=settings.pacing_max_wait_s
    )
    runtime = Runtime(settings, service, store, transport, engine, stats, groups, prober, metrics)
    runtime.background.append(asyncio.create_task(prober.run(), name="keypool-prober"))
    runtime.ready = True
    return runtime
