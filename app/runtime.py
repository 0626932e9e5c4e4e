"""Everything long-lived that a gateway process owns, built and closed by the lifespan."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from app.access.budgets import WarningSink, log_budget_exceeded, log_budget_warning
from app.access.service import Access, build_access
from app.access.spend import SpendSink
from app.cache.service import ResponseCache, build_cache
from app.chat.assembly import build_chat
from app.chat.live import LiveKeys
from app.chat.recovery import KeyProber
from app.chat.service import ChatService
from app.chat.userstreams import UserStreams
from app.config import Settings
from app.db.migrate import upgrade_async
from app.db.session import create_engine, create_sessionmaker, mask_url
from app.db.spool import Spool
from app.db.stats_writer import StatsWriter
from app.db.user_groups import UserGroupService
from app.metrics import MeteredSink, Metrics
from app.observability.hub import Observability
from app.observability.watch import StateWatcher
from app.providers.transport import AiohttpTransport, Transport
from app.state.base import KeyStateStore
from app.state.build import build_store
from app.state.degrading import DegradingStore
from app.vault.byok import ByokPools
from app.vault.keys import VaultKeys
from app.vault.rotation import verify_master_key_sync
from app.vault.serving import VaultServing
from app.vault.wiring import open_vault

logger = logging.getLogger("keypool")


def _logged_and(log: WarningSink, alert: WarningSink) -> WarningSink:
    """A budget sink that keeps the access layer's log line and also raises the alert."""

    def sink(user_id: str, spent_usd: float, budget_usd: float) -> None:
        log(user_id, spent_usd, budget_usd)
        alert(user_id, spent_usd, budget_usd)

    return sink


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
    metrics: Metrics | None = field(default_factory=Metrics)  # None: METRICS_ENABLED=false
    observability: Observability | None = None
    user_streams: UserStreams = field(default_factory=lambda: UserStreams(None))
    ready: bool = False
    draining: bool = False
    background: list[asyncio.Task[None]] = field(default_factory=list)
    vault: VaultKeys | None = None  # None: KEYPOOL_MASTER_KEY unset, the vault is off
    cache: ResponseCache | None = None  # the response cache; None with CACHE_MODE=off

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
        if self.cache is not None:
            await self.cache.aclose()
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
    vault: VaultKeys | None  # run-time and users' own keys: read by api/vault (None: off)
    observability: Observability | None  # read by the edge middleware (api/edge.py)


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
    spool = Spool(settings.stats_spool_path)
    stats = StatsWriter(sessions, flush_interval_s=settings.stats_flush_interval_s, spool=spool)
    metrics = Metrics() if settings.metrics_enabled else None
    observability = Observability(
        settings.providers,
        metrics,
        webhook_url=settings.alert_webhook_url,
        alert_cooldown_s=settings.alert_cooldown_s,
        log_prompts=settings.log_prompts,
    )
    observability.start()
    # Without client keys nothing else bounds how many user ids a caller may invent.
    new_users = settings.new_users_per_minute if settings.auth_mode == "none" else None
    groups = UserGroupService(
        sessions, settings.groups, spool=spool, new_users_per_minute=new_users
    )
    await stats.start()
    await groups.start()
    # Raises WrongMasterKey (one line, exit 2) when the master key does not open the rows.
    vault = await open_vault(settings, engine)
    serving = settings
    if vault is not None:
        # Environment keys, then vault keys; key groups stay as the environment sets them.
        merged = [vault.with_vault_keys(p) for p in settings.providers]
        serving = settings.model_copy(update={"providers": merged, "key_groups": settings.groups})
    store = build_store(serving)
    if isinstance(store, DegradingStore):
        await store.start()
    byok: ByokPools | None = None

    def own_keys(transport: Transport) -> ByokPools:
        nonlocal byok
        assert vault is not None
        byok = ByokPools({p.name: p for p in settings.providers}, vault.byok, transport)
        return byok

    access = await build_access(
        settings,
        sessions,
        # One alert per user per day each, from the ledger: logged by the access layer and
        # sent through the observability hub (webhook, counters).
        on_budget_warning=_logged_and(log_budget_warning, observability.budget_warning),
        on_budget_exceeded=_logged_and(log_budget_exceeded, observability.budget_exceeded),
    )
    # Cost and budgets: each settled attempt is priced and booked before it is counted.
    metered = MeteredSink(stats, metrics, observability.summary, observability.deferred.call)
    sink = SpendSink(metered, access)
    chat = build_chat(
        serving,
        store,
        sink=sink,
        groups=groups,
        own_keys=own_keys if vault is not None else None,
        prices=access.prices,
        observer=observability,  # settled attempts, provider_exhausted
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
        vault=vault,
    )
    runtime.observability = observability
    runtime.user_streams = UserStreams(settings.max_streams_per_user)
    runtime.background.append(asyncio.create_task(chat.prober.run(), name="keypool-prober"))
    if vault is not None:
        live = LiveKeys(chat.directory, chat.clients, store)
        forget = byok.forget if byok is not None else None
        VaultServing(vault, live.apply, forget).start()
        runtime.background.append(asyncio.create_task(vault.run(), name="keypool-vault"))
    # The live key lists: vault keys added or removed while serving show up in the next look.
    observability.follow(chat.directory.all)
    watcher = StateWatcher(chat.directory.all, store, observability)
    runtime.background.append(asyncio.create_task(watcher.run(), name="keypool-watcher"))
    # Hits, misses and bypasses reach /metrics from the answers' x-keypool-cache header
    # (the edge middleware's record), so the cache itself needs no collector.
    runtime.cache = response_cache(settings)
    runtime.ready = True
    return runtime


def check_master_key(settings: Settings) -> None:
    """Before serving: a KEYPOOL_MASTER_KEY that does not open the stored keys raises
    WrongMasterKey (a ConfigError: one line, non-zero exit), never a traceback at start-up.

    `uvicorn app.main:app` builds the app inside its running loop, so the check then runs on a
    thread of its own.
    """
    key = settings.keypool_master_key
    if key is None:
        return
    secret = key.get_secret_value()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        verify_master_key_sync(settings.database_url, secret)
        return
    failure: list[BaseException] = []

    def check() -> None:
        try:
            verify_master_key_sync(settings.database_url, secret)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=check, name="keypool-master-key-check")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def response_cache(settings: Settings) -> ResponseCache | None:
    """The response cache (shared through Redis when REDIS_URL is set); None when off."""
    if settings.cache_mode == "off":
        return None
    return build_cache(
        mode=settings.cache_mode,
        scope=settings.cache_scope,
        ttl_s=settings.cache_ttl_s,
        max_entries=settings.cache_max_entries,
        redis_url=settings.redis_url.get_secret_value() if settings.redis_url else None,
        prefix=settings.keypool_redis_prefix + "cache:",
        timeout_s=settings.redis_timeout_s,
    )
