"""Everything long-lived that a gateway process owns, built and closed by the lifespan."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from app.access.service import Access, build_access
from app.chat.assembly import build_chat
from app.chat.live import LiveKeys
from app.chat.recovery import KeyProber
from app.chat.service import ChatService
from app.config import Settings
from app.db.migrate import upgrade_async
from app.db.session import create_engine, create_sessionmaker, mask_url
from app.db.stats_writer import StatsWriter
from app.db.user_groups import UserGroupService
from app.metrics import MeteredSink, Metrics
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
    ready: bool = False
    draining: bool = False
    background: list[asyncio.Task[None]] = field(default_factory=list)
    vault: VaultKeys | None = None  # None: KEYPOOL_MASTER_KEY unset, the vault is off

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
    groups = UserGroupService(sessions, settings.groups)
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

    chat = build_chat(
        serving,
        store,
        sink=MeteredSink(stats, metrics),
        groups=groups,
        own_keys=own_keys if vault is not None else None,
    )
    access = await build_access(settings, sessions)
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
    runtime.background.append(asyncio.create_task(chat.prober.run(), name="keypool-prober"))
    if vault is not None:
        live = LiveKeys(chat.directory, chat.clients, store)
        forget = byok.forget if byok is not None else None
        VaultServing(vault, live.apply, forget).start()
        runtime.background.append(asyncio.create_task(vault.run(), name="keypool-vault"))
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
