"""`Access`: everything the access middleware and admin routes share, built once at start."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.access.budgets import (
    BudgetLedger,
    WarningSink,
    log_budget_exceeded,
    log_budget_warning,
    utc_day,
)
from app.access.clientkeys import ClientKeyIndex, generate_key, hash_key, key_prefix
from app.access.prices import PriceBook
from app.access.principal import Principal, resolve
from app.access.ratelimit import Decision, SlidingWindowLimiter
from app.access.tiers import Tiers, parse_tiers
from app.config import Settings
from app.db.access import (
    UNSET,
    ClientKey,
    ClientKeyRepository,
    DailyUsage,
    DailyUsageRepository,
    UserLimits,
    UserLimitsRepository,
)
from app.db.session import DB_ERRORS
from app.db.usage_writer import UsageWriter

logger = logging.getLogger("keypool.access")

AuthMode = Literal["none", "token", "trusted"]


class Limiter(Protocol):
    async def acquire(self, user_id: str, limit: int, now: float) -> Decision: ...


class LocalLimiter:
    """The in-process limiter behind the same awaitable interface as the Redis one."""

    def __init__(self) -> None:
        self.inner = SlidingWindowLimiter()

    async def acquire(self, user_id: str, limit: int, now: float) -> Decision:
        return self.inner.acquire(user_id, limit, now)


class Access:
    """Client-key index, per-user limits, limiter, prices and the day's spend ledger.

    Lookups are in memory; the index and user limits are reloaded from the database every
    `refresh_s` (ACCESS_REFRESH_S, default 10 s) so keys created or revoked on another instance
    take effect here within that time (at once on the instance that served the admin call).
    """

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        limiter: Limiter | None = None,
        clock: Callable[[], float] = time.time,
        on_budget_warning: WarningSink = log_budget_warning,
        on_budget_exceeded: WarningSink = log_budget_exceeded,
    ) -> None:
        self.mode: AuthMode = settings.auth_mode
        self.tiers: Tiers = parse_tiers(
            settings.tier_rpm, settings.tier_daily_budget_usd, settings.default_tier
        )
        self.prices = PriceBook.build(settings.model_prices)
        self._service_token = (
            settings.service_token.get_secret_value().encode() if settings.service_token else None
        )
        self._sessionmaker = sessionmaker
        self.clock = clock
        self.index = ClientKeyIndex()
        self.users: dict[str, UserLimits] = {}
        self._principals: dict[int, tuple[ClientKey, UserLimits | None, Principal]] = {}
        self.limiter: Limiter = limiter or LocalLimiter()
        self.ledger = BudgetLedger(clock, on_budget_warning, on_budget_exceeded)
        # The budget each authenticated user was last admitted under (a client key's own
        # budget may differ from the user's): what their spend is booked against.
        self._budgets: dict[str, float] = {}
        self.usage = UsageWriter(
            sessionmaker, flush_interval_s=settings.stats_flush_interval_s, clock=clock
        )
        self.refresh_s = settings.access_refresh_s
        self._task: asyncio.Task[None] | None = None
        self._closers: list[Callable[[], Any]] = []

    # --- start / stop -------------------------------------------------------------------

    async def start(self) -> None:
        await self.reload()
        self.usage.start()
        self._task = asyncio.create_task(self._refresh_loop(), name="keypool-access-refresh")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.usage.aclose()
        for close in self._closers:
            await close()

    async def reload(self) -> bool:
        """Keys, user limits and today's spend from the database; False if it is down."""
        day = utc_day(self.clock())
        try:
            async with self._sessionmaker() as session:
                keys = await ClientKeyRepository(session).list()
                users = await UserLimitsRepository(session).customised(self.tiers.default)
                spent = await DailyUsageRepository(session).total_cost(day)
        except DB_ERRORS as exc:
            logger.warning(
                "access: database unavailable (%s); keeping known keys", type(exc).__name__
            )
            return False
        self.index.replace_all(keys)
        self.users = users
        self._principals.clear()  # revoked keys' entries go with the rest
        self.ledger.load(day, spent, lambda user: self.for_user(user).daily_budget_usd)
        return True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.reload()

    # --- the request path ---------------------------------------------------------------

    def by_client_key(self, presented: str) -> Principal | None:
        key = self.index.find(presented)
        if key is None:
            return None
        self.usage.touch(key.id)
        user = self.users.get(key.user_id)
        # Resolved once per (key, user limits) pair: both are immutable and replaced, never
        # changed in place, when a reload or an admin call changes them.
        cached = self._principals.get(key.id)
        if cached is not None and cached[0] is key and cached[1] is user:
            return cached[2]
        principal = resolve(self.tiers, key.user_id, user, key)
        self._principals[key.id] = (key, user, principal)
        return principal

    def is_service_token(self, presented: str) -> bool:
        if self._service_token is None:
            return False
        return hmac.compare_digest(presented.encode(), self._service_token)

    def for_user(self, user_id: str) -> Principal:
        return resolve(self.tiers, user_id, self.users.get(user_id))

    def budget_left_s(self, principal: Principal) -> float | None:
        """None when the user may spend; else seconds until its budget renews."""
        self._budgets[principal.user_id] = principal.daily_budget_usd
        return self.ledger.exhausted(principal.user_id, principal.daily_budget_usd)

    def admit(self, principal: Principal) -> Awaitable[Decision]:
        return self.limiter.acquire(principal.user_id, principal.rpm, self.clock())

    def record(
        self,
        user_id: str | None,
        provider: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        budget_usd: float | None = None,
    ) -> float:
        """Cost of one answer in USD; adds it to the user's day (memory now, database batched).

        `budget_usd` is the caller's principal budget when known (token/trusted mode); else
        the user's own or tier budget. Requests without a user are priced but not ledgered.
        """
        cost = self.prices.cost_usd(provider, model, prompt_tokens, completion_tokens)
        if user_id is None:
            return cost
        budget = budget_usd if budget_usd is not None else self.for_user(user_id).daily_budget_usd
        self.ledger.add(user_id, cost, budget)  # rolls the ledger's day first
        self.usage.add_answer(user_id, self.ledger.day, prompt_tokens, completion_tokens, cost)
        return cost

    def spend_budget(self, user_id: str) -> float:
        """The budget a user's spend counts against: 0 (none) in `none` mode, where users are
        self-declared; else the budget they were last admitted under, or their own/tier one."""
        if self.mode == "none":
            return 0.0
        seen = self._budgets.get(user_id)
        return seen if seen is not None else self.for_user(user_id).daily_budget_usd

    # --- admin --------------------------------------------------------------------------

    def check_tier(self, tier: str | None) -> None:
        if tier is not None and not self.tiers.known(tier):
            raise ValueError(f"unknown tier {tier!r}; tiers: {', '.join(self.tiers.rpm)}")

    async def create_client(
        self,
        user_id: str,
        *,
        tier: str | None = None,
        name: str | None = None,
        rpm: int | None = None,
        daily_budget_usd: float | None = None,
    ) -> tuple[str, ClientKey]:
        """A new key (returned once, never stored) and its stored entry."""
        self.check_tier(tier)
        secret = generate_key()
        async with self._sessionmaker() as session, session.begin():
            entry = await ClientKeyRepository(session).create(
                key_hash=hash_key(secret),
                key_prefix=key_prefix(secret),
                user_id=user_id,
                tier=tier,
                name=name,
                rpm=rpm,
                daily_budget_usd=daily_budget_usd,
                created_at=self.now(),
            )
        self.index.put(entry)
        logger.info("access: client key %s created for user %r", entry.key_prefix, user_id)
        return secret, entry

    async def list_clients(self) -> list[ClientKey]:
        async with self._sessionmaker() as session:
            return await ClientKeyRepository(session).list()

    async def revoke_client(self, key_id: int) -> ClientKey | None:
        async with self._sessionmaker() as session, session.begin():
            entry = await ClientKeyRepository(session).revoke(key_id, self.now())
        if entry is not None:
            self.index.put(entry)
            logger.info("access: client key %s revoked", entry.key_prefix)
        return entry

    async def user_limits(self, user_id: str) -> UserLimits | None:
        async with self._sessionmaker() as session:
            return await UserLimitsRepository(session).get(user_id)

    async def patch_user(
        self,
        user_id: str,
        *,
        tier: str | None = UNSET,
        rpm: int | None = UNSET,
        daily_budget_usd: float | None = UNSET,
    ) -> UserLimits | None:
        self.check_tier(None if tier is UNSET else tier)
        async with self._sessionmaker() as session, session.begin():
            limits = await UserLimitsRepository(session).patch(
                user_id, tier=tier, rpm=rpm, daily_budget_usd=daily_budget_usd
            )
        if limits is not None:
            self.users[user_id] = limits
        return limits

    async def usage_today(self, user_id: str) -> DailyUsage:
        """Stored usage plus what is still waiting to be written."""
        day = utc_day(self.clock())
        async with self._sessionmaker() as session:
            stored = await DailyUsageRepository(session).of_day(day, [user_id])
        return stored.get(user_id, DailyUsage()).plus(self.usage.pending_for(user_id, day))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def on_close(self, close: Callable[[], Any]) -> None:
        self._closers.append(close)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def build_access(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    clock: Callable[[], float] = time.time,
    on_budget_warning: WarningSink = log_budget_warning,
    on_budget_exceeded: WarningSink = log_budget_exceeded,
) -> Access:
    """Build and start the access layer; with REDIS_URL the user limits are shared.

    The two sinks receive the budget alerts (runtime.py passes the observability hub's)."""
    limiter: Limiter | None = None
    redis_client = None
    if settings.redis_url is not None and settings.auth_mode != "none":
        from app.access.redis_limiter import RedisLimiter
        from app.state.redis import connect

        redis_client = connect(settings.redis_url.get_secret_value(), settings.redis_timeout_s)
        limiter = RedisLimiter(
            redis_client,
            settings.keypool_redis_prefix,
            SlidingWindowLimiter(),
            timeout_s=settings.redis_timeout_s,
        )
    access = Access(
        settings,
        sessionmaker,
        limiter=limiter,
        clock=clock,
        on_budget_warning=on_budget_warning,
        on_budget_exceeded=on_budget_exceeded,
    )
    if redis_client is not None:
        access.on_close(redis_client.aclose)
    if settings.auth_mode == "none" and not is_loopback(settings.host):
        logger.warning(
            "AUTH_MODE=none on %s: anyone who reaches this port may spend the keys "
            "(set AUTH_MODE=token and create client keys)",
            settings.host,
        )
    await access.start()
    return access
