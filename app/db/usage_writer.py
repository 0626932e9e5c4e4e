"""Batched writes of per-user daily usage and client-key last use, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.access import ClientKeyRepository, DailyUsage, DailyUsageRepository
from app.db.session import DB_ERRORS

logger = logging.getLogger("keypool.db")

MAX_PENDING_USERS = 100_000


class _Tally:
    """One (day, user)'s increments since the last flush, added in place: one answer costs
    four additions, not two new objects."""

    __slots__ = ("completion_tokens", "cost_usd", "prompt_tokens", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0

    def usage(self) -> DailyUsage:
        return DailyUsage(self.requests, self.prompt_tokens, self.completion_tokens, self.cost_usd)


class UsageWriter:
    """Sums increments in memory and upserts them every `flush_interval_s`.

    A failed flush puts the batch back (merged with what arrived meanwhile), so a database
    outage delays the figures instead of losing them; the queue is bounded by user count.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        flush_interval_s: float = 1.0,
        clock: Callable[[], float],
    ) -> None:
        self._sessionmaker = sessionmaker
        self._interval = flush_interval_s
        self._clock = clock
        self._usage: dict[tuple[date, str], _Tally] = {}
        self._last_used: dict[int, float] = {}  # epoch seconds: made datetimes when written
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def pending(self) -> int:
        return len(self._usage) + len(self._last_used)

    def add_answer(
        self, user_id: str, day: date, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> None:
        """One answer of `user_id` on `day`: a request, its tokens and its cost."""
        self._add(user_id, day, 1, prompt_tokens, completion_tokens, cost_usd)

    def add(self, user_id: str, day: date, delta: DailyUsage) -> None:
        self._add(
            user_id,
            day,
            delta.requests,
            delta.prompt_tokens,
            delta.completion_tokens,
            delta.cost_usd,
        )

    def _add(
        self, user_id: str, day: date, requests: int, prompt: int, completion: int, cost: float
    ) -> None:
        tally = self._tally(user_id, day)
        if tally is not None:
            tally.requests += requests
            tally.prompt_tokens += prompt
            tally.completion_tokens += completion
            tally.cost_usd += cost

    def _tally(self, user_id: str, day: date) -> _Tally | None:
        slot = (day, user_id)
        tally = self._usage.get(slot)
        if tally is None:
            if len(self._usage) >= MAX_PENDING_USERS:
                return None
            tally = self._usage[slot] = _Tally()
        return tally

    def pending_for(self, user_id: str, day: date) -> DailyUsage:
        tally = self._usage.get((day, user_id))
        return DailyUsage() if tally is None else tally.usage()

    def touch(self, key_id: int) -> None:
        self._last_used[key_id] = self._clock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keypool-usage-writer")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> bool:
        usage, self._usage = self._usage, {}
        last_used, self._last_used = self._last_used, {}
        if not usage and not last_used:
            return True
        by_day: dict[date, dict[str, DailyUsage]] = {}
        for (day, user_id), tally in usage.items():
            by_day.setdefault(day, {})[user_id] = tally.usage()
        try:
            async with self._sessionmaker() as session, session.begin():
                for day, deltas in sorted(by_day.items()):
                    await DailyUsageRepository(session).add(day, deltas)
                await ClientKeyRepository(session).touch(
                    {key_id: datetime.fromtimestamp(at, UTC) for key_id, at in last_used.items()}
                )
        except DB_ERRORS as exc:
            for (day, user_id), tally in usage.items():
                self.add(user_id, day, tally.usage())
            for key_id, at in last_used.items():
                self._last_used.setdefault(key_id, at)
            if not self._failing:
                self._failing = True
                logger.warning(
                    "usage: database unavailable (%s); kept in memory", type(exc).__name__
                )
            return False
        if self._failing:
            self._failing = False
            logger.info("usage: database back; pending usage written")
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()
