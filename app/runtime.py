"""Everything long-lived that a gateway process owns, built and closed by the lifespan."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from app.access.service import Access, build_access
from app.chat.assembly import build_chat
from app.chat.recovery import KeyProber
from app.chat.service import ChatService
from app.config import Settings
from app.db.migrate import upgrade_async
from app.db.session import create_engine, create_sessionmaker, mask_url
from app.db.stats_writer import StatsWriter
from app.db.user_groups import UserGroupService
from app.metrics import MeteredSink, Metrics
from app.observability.hub import Observability
from app.observability.watch import StateWatcher
from app.providers.transport import AiohttpTransport
from app.state.base import KeyStateStore
from app.state.build import build_store
from app.state.degrading import DegradingStore

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
    access: Access
    metrics: Metrics = field(default_factory=Metrics)
    observability: Observability | None = None
    ready: bool = False
    draining: bool = False
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def redis_status(self) -> str:
        """ "off" without REDIS_URL; else whether the shared state is in use right now."""
        if isinstance(self.store, DegradingStore):
            return self.store.redis_status()
        return "off"

    async def aclose(self) -> None:
        """Drain: stop background work, flush access usage, stats and user groups, close pools."""
        self.draining = True
        self.service.bind_loop(None)
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.access.aclose()
        if self.observability is not None:
            await self.observability.aclose()
        await self.groups.aclose()
        await self.stats.aclose()
        await self.store.aclose()
        await self.transport.aclose()
        await self.engine.dispose()


class LifespanState(TypedDict):
    """What the lifespan yields: Starlette copies it into every request's `state`."""

    runtime: Runtime
    access: Access  # client keys, per-user limits and spend: read by api/access and api/clients
    observability: Observability | None  # read by the RequestObserver middleware


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
    """Build from below: database side, key state, then the chat layer on top of both."""
    await migrate(settings)
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    stats = StatsWriter(sessions, flush_interval_s=settings.stats_flush_interval_s)
    metrics = Metrics()
    observability = Observability(
        settings.providers,
        metrics,
        webhook_url=settings.alert_webhook_url,
        alert_cooldown_s=settings.alert_cooldown_s,
        log_prompts=settings.log_prompts,
    )
    observability.start()
    groups = UserGroupService(sessions, settings.groups)
    await stats.start()
    await groups.start()
    store = build_store(settings)
    if isinstance(store, DegradingStore):
        await store.start()
    chat = build_chat(
        settings,
        store,
        sink=MeteredSink(stats, metrics, observability.summary),
        groups=groups,
        observer=observability,  # settled attempts, provider_exhausted
    )
    access = await build_access(
        settings,
        sessions,
        on_budget_warning=observability.budget_warning,
        on_budget_exceeded=observability.budget_exceeded,
    )
    runtime = Runtime(
        settings,
        chat.service,
        store,
        chat.transport,
        engine,
        stats,
        groups,
        chat.prober,
        access,
        metrics,
    )
    runtime.observability = observability
    runtime.background.append(asyncio.create_task(chat.prober.run(), name="keypool-prober"))
    watcher = StateWatcher(settings.providers, store, observability)
    runtime.background.append(asyncio.create_task(watcher.run(), name="keypool-watcher"))
    runtime.ready = True
    return runtime
