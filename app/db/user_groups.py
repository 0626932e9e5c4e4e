"""Assign users key groups, least-loaded at first sight, with no DB write on the request path."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.db.assignment import LruCache, least_loaded, plan_rebalance
from app.db.flushing import FlushLoop
from app.db.outage import OutageLog
from app.db.repositories import KeyStatsRepository, NewUser, UserRepository
from app.db.session import DB_ERRORS, SessionFactory, describe_target
from app.db.spool import Spool
from app.errors import DatabaseUnavailable
from app.timefmt import iso_utc

_log = logging.getLogger(__name__)
SPOOL_KIND = "user"


@dataclass(frozen=True, slots=True)
class ProfileDTO:
    """A user as the admin API shows it."""

    user_id: str
    api_key_group: int
    tier: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RebalanceResult:
    """Users seen, groups spread over, and users whose group changed."""

    users: int
    groups: int
    moved: int


@dataclass(frozen=True, slots=True)
class GroupStat:
    """One row of the admin health view's ``keyGroupStats``."""

    key_group: int
    user_count: int
    total_requests: int
    total_tokens: int
    last_request_at: str | None


class UserGroupService:
    """Maps user ids to key groups 1..G.

    A new user gets the least-loaded group by the in-memory sizes (loaded at ``start``)
    and is saved by a background task with ON CONFLICT DO NOTHING; when another
    instance saved the user first, its group is adopted. Concurrent first requests for
    one user share a single lookup. While the database is down users still get groups;
    they are saved when it returns. Sizes are per instance between restarts and
    rebalances, so N instances keep groups within about N of each other.
    """

    def __init__(
        self,
        sessionmaker: SessionFactory,
        groups: int,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = 100_000,
        max_pending: int = 100_000,
        flush_interval_s: float = 0.5,
        read_timeout_s: float = 2.0,
        logger: logging.Logger = _log,
        spool: Spool | None = None,
        new_users_per_minute: int | None = None,
    ) -> None:
        if groups < 1:
            raise ValueError("groups must be at least 1")
        self.groups = groups
        self._sessionmaker = sessionmaker
        self._clock = clock
        self._read_timeout = read_timeout_s
        self._logger = logger
        self._max_pending = max_pending
        self._spool = spool
        self._new_per_minute = new_users_per_minute
        self._minute_started = 0.0
        self._new_this_minute = 0
        self._cache: LruCache[str, int] = LruCache(cache_size)
        self._cache_size = cache_size
        self._sizes: dict[int, int] = {}
        self._assign_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._lookups: dict[str, asyncio.Task[int]] = {}
        self._pending: dict[str, NewUser] = {}
        self._writing: dict[str, NewUser] = {}
        self._queue_full_warned = False
        self._loop = FlushLoop(self.flush, flush_interval_s, "user groups", logger)
        self._outage = OutageLog(logger, "user groups", describe_target(sessionmaker))

    @property
    def healthy(self) -> bool:
        return self._outage.healthy

    @property
    def sizes(self) -> dict[int, int]:
        """In-memory users per group 1..G (stored plus not yet saved)."""
        return {g: self._sizes.get(g, 0) for g in range(1, self.groups + 1)}

    @property
    def pending_users(self) -> int:
        return len(self._pending) + len(self._writing)

    async def start(self) -> None:
        """Load group sizes (a down database only delays that) and start the saver."""
        if self._spool is not None:
            self._unspool(self._spool.take(SPOOL_KIND))
        try:
            await self._resync_sizes()
        except DB_ERRORS as exc:
            self._outage.failed(exc, kept="new users")
        else:
            await self._warm_cache()
        self._loop.start()

    async def aclose(self) -> None:
        """Stop the saver and write the users still queued (or spool them)."""
        if await self._loop.stop() or not self.pending_users:
            return
        users = [*self._writing.values(), *self._pending.values()]
        records = [
            {
                "user_id": u.user_id,
                "api_key_group": u.api_key_group,
                "tier": u.tier,
                "created_at": u.created_at.timestamp(),
            }
            for u in users
        ]
        if self._spool is not None and self._spool.put(SPOOL_KIND, records):
            self._pending, self._writing = {}, {}  # saved at the next start
            return
        self._logger.error("user groups: shutting down with %d users unsaved", len(users))

    def _unspool(self, records: list[dict[str, Any]]) -> None:
        """Users a previous process assigned but could not save: same groups, saved now."""
        for record in records:
            try:
                user = NewUser(
                    str(record["user_id"]),
                    int(record["api_key_group"]),
                    datetime.fromtimestamp(float(record["created_at"]), UTC),
                    str(record.get("tier", "free")),
                )
            except (KeyError, TypeError, ValueError):
                self._logger.warning("user groups: malformed spooled user skipped")
                continue
            if not 1 <= user.api_key_group <= self.groups:
                user = NewUser(
                    user.user_id, least_loaded(self._sizes, self.groups), user.created_at
                )
            self._pending[user.user_id] = user
            self._cache.put(user.user_id, user.api_key_group)
            self._sizes[user.api_key_group] = self._sizes.get(user.api_key_group, 0) + 1
        if records:
            self._loop.wake()

    async def group_for(self, user_id: str) -> int:
        """The user's group: cached, else stored, else newly assigned."""
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        lookup = self._lookups.get(user_id)
        if lookup is None:
            # A task, not the first caller's coroutine: its cancellation (client gone)
            # must not fail the other callers waiting on the same user.
            lookup = asyncio.create_task(self._resolve(user_id))
            self._lookups[user_id] = lookup
            lookup.add_done_callback(functools.partial(self._lookup_done, user_id))
        return await asyncio.shield(lookup)

    def _lookup_done(self, user_id: str, task: asyncio.Task[int]) -> None:
        if self._lookups.get(user_id) is task:
            del self._lookups[user_id]
        if not task.cancelled() and task.exception() is not None:
            self._logger.error("user groups: lookup failed", exc_info=task.exception())

    async def _resolve(self, user_id: str) -> int:
        stored = await self._read_group(user_id)
        if stored is not None:
            self._cache.put(user_id, stored)
            return stored
        async with self._assign_lock:
            known = self._cache.get(user_id)
            if known is not None:
                return known
            group = least_loaded(self._sizes, self.groups)
            self._cache.put(user_id, group)
            if not self._admit_new_user():
                return group  # served from memory (bounded LRU), never stored
            self._sizes[group] = self._sizes.get(group, 0) + 1
            self._enqueue(NewUser(user_id, group, datetime.fromtimestamp(self._clock(), UTC)))
            return group

    def _admit_new_user(self) -> bool:
        """At most NEW_USERS_PER_MINUTE new users are stored per minute: user ids are claims
        anyone can make up, and each stored one is a permanent row. Over it, a new id still
        gets a group for this process's lifetime (in the bounded cache) but no row."""
        if self._new_per_minute is None:
            return True
        now = self._clock()
        if now - self._minute_started >= 60.0:
            if self._new_this_minute > self._new_per_minute:
                self._logger.warning(
                    "user groups: %d new user ids in a minute; %d stored (NEW_USERS_PER_MINUTE)",
                    self._new_this_minute,
                    self._new_per_minute,
                )
            self._minute_started, self._new_this_minute = now, 0
        self._new_this_minute += 1
        return self._new_this_minute <= self._new_per_minute

    async def _read_group(self, user_id: str) -> int | None:
        """Memory only: a request never waits on the database (one that accepts connections and
        never answers cost seconds here). Users stored before this process started are in the
        cache from `start`; any other stored group is adopted when the new user is saved."""
        queued = self._pending.get(user_id) or self._writing.get(user_id)
        return queued.api_key_group if queued is not None else None

    async def _warm_cache(self) -> None:
        """The most recent users' groups, so returning users keep theirs from the first request."""
        try:
            async with asyncio.timeout(self._read_timeout), self._sessionmaker() as session:
                recent = await UserRepository.from_session(session).recent_groups(self._cache_size)
        except DB_ERRORS as exc:
            self._outage.failed(exc, kept="new users")
            return
        for user_id, group in reversed(recent):  # oldest first: the newest end up freshest
            if self._cache.get(user_id) is None:
                self._cache.put(user_id, group)

    def _enqueue(self, user: NewUser) -> None:
        if len(self._pending) >= self._max_pending:
            # Served from memory anyway; it is queued again when next seen after eviction.
            if not self._queue_full_warned:
                self._logger.warning("user groups: save queue full; new users kept in memory")
                self._queue_full_warned = True
            return
        self._pending[user.user_id] = user
        if self._outage.healthy:
            self._loop.wake()

    async def flush(self) -> bool:
        """Save queued users now; False (and kept) when the database is unavailable."""
        async with self._flush_lock:
            if not self._pending and self._outage.healthy:
                return True
            self._writing, self._pending = self._pending, {}
            saved = False
            try:
                stored, sizes = await self._save(list(self._writing.values()))
                saved = True
            except DB_ERRORS as exc:
                self._outage.failed(exc, kept=f"{len(self._writing)} new users")
            finally:
                batch, self._writing = self._writing, {}
                if not saved:
                    self._pending = batch | self._pending
        if not saved:
            return False
        self._adopt(batch, stored)
        if sizes is not None:
            self._set_sizes(sizes)
        self._queue_full_warned = False
        self._outage.succeeded()
        return True

    async def _save(self, users: list[NewUser]) -> tuple[dict[str, int], dict[int, int] | None]:
        """Insert ``users`` and read back their stored groups (and all sizes after an outage)."""
        async with self._sessionmaker() as session:
            repo = UserRepository.from_session(session)
            if users:
                await repo.insert_if_absent(users)
            stored = await repo.groups_of(u.user_id for u in users) if users else {}
            sizes = None if self._outage.healthy else await repo.group_sizes()
            await session.commit()
        return stored, sizes

    def _adopt(self, batch: dict[str, NewUser], stored: dict[str, int]) -> None:
        for user_id, user in batch.items():
            group = stored.get(user_id)
            if group is None or group == user.api_key_group:
                continue
            # Another instance saved this user first (or we could not read it): theirs wins.
            self._sizes[user.api_key_group] = self._sizes.get(user.api_key_group, 1) - 1
            self._sizes[group] = self._sizes.get(group, 0) + 1
            self._cache.put(user_id, group)

    async def _resync_sizes(self) -> None:
        async with self._sessionmaker() as session:
            sizes = await UserRepository.from_session(session).group_sizes()
        self._set_sizes(sizes)

    def _set_sizes(self, stored: dict[int, int]) -> None:
        sizes = {g: stored.get(g, 0) for g in range(1, self.groups + 1)}
        for user in (*self._writing.values(), *self._pending.values()):
            sizes[user.api_key_group] = sizes.get(user.api_key_group, 0) + 1
        self._sizes = sizes

    async def get_profile(self, user_id: str) -> ProfileDTO | None:
        """The stored profile, or the in-memory one of a user not saved yet."""
        queued = self._pending.get(user_id) or self._writing.get(user_id)
        try:
            async with self._sessionmaker() as session:
                row = await UserRepository.from_session(session).get(user_id)
        except DB_ERRORS as exc:
            if queued is None:
                raise DatabaseUnavailable("cannot read user profile") from exc
            row = None
        if row is not None:
            return ProfileDTO(row.user_id, row.api_key_group, row.tier, row.created_at)
        if queued is not None:
            return ProfileDTO(queued.user_id, queued.api_key_group, queued.tier, queued.created_at)
        return None

    async def rebalance(self) -> RebalanceResult:
        """Spread all users evenly over 1..G, moving as few as possible."""
        if not await self.flush():
            raise DatabaseUnavailable("cannot save queued users before rebalancing")
        async with self._assign_lock:
            try:
                async with self._sessionmaker() as session:
                    repo = UserRepository.from_session(session)
                    users = await repo.list_for_rebalance()
                    plan = plan_rebalance(users, self.groups)
                    await repo.update_groups(plan.moves)
                    await session.commit()
            except DB_ERRORS as exc:
                raise DatabaseUnavailable("cannot rebalance user groups") from exc
            self._set_sizes(plan.sizes)
            for user_id, group in plan.moves.items():
                self._cache.replace_if_present(user_id, group)
        self._logger.info("user groups: rebalanced %d users, %d moved", len(users), len(plan.moves))
        return RebalanceResult(users=len(users), groups=self.groups, moved=len(plan.moves))

    async def group_stats(self) -> list[GroupStat]:
        """Users and usage per group 1..G for the admin health view."""
        try:
            async with self._sessionmaker() as session:
                rows = await KeyStatsRepository.from_session(session).group_stats(self.groups)
        except DB_ERRORS as exc:
            raise DatabaseUnavailable("cannot read group stats") from exc
        return [
            GroupStat(
                key_group=r.key_group,
                user_count=r.user_count,
                total_requests=r.total_requests,
                total_tokens=r.total_tokens,
                last_request_at=iso_utc(r.last_request_at),
            )
            for r in rows
        ]
