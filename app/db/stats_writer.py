"""Aggregate per-key usage in memory and upsert it in batches, off the request path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.db.flushing import FlushLoop
from app.db.outage import OutageLog
from app.db.repositories import KeyStatsRepository, StatsDelta
from app.db.session import DB_ERRORS, SessionFactory, describe_target
from app.db.spool import Spool
from app.usage import UsageEvent

_log = logging.getLogger(__name__)

RowKey = tuple[str, int, int | None]
SPOOL_KIND = "stats"


@dataclass(slots=True)
class _Tally:
    """Running sums for one row; merged rather than queued so memory stays keys x groups."""

    fingerprint: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    rate_limited: int = 0
    last_at: float = 0.0
    cost_usd: float = 0.0

    def add(self, event: UsageEvent, at: float) -> None:
        self.requests += 1
        self.prompt_tokens += event.prompt_tokens
        self.completion_tokens += event.completion_tokens
        self.errors += event.error
        self.rate_limited += event.rate_limited
        self.last_at = max(self.last_at, at)
        self.cost_usd += event.cost_usd
        self.fingerprint = event.fingerprint

    def absorb(self, older: _Tally) -> None:
        """Fold in sums that were taken out for a flush that failed (ours are newer)."""
        self.requests += older.requests
        self.prompt_tokens += older.prompt_tokens
        self.completion_tokens += older.completion_tokens
        self.errors += older.errors
        self.rate_limited += older.rate_limited
        self.last_at = max(self.last_at, older.last_at)
        self.cost_usd += older.cost_usd

    def delta(self, key: RowKey) -> StatsDelta:
        provider, key_index, key_group = key
        return StatsDelta(
            provider=provider,
            key_index=key_index,
            key_fingerprint=self.fingerprint,
            key_group=key_group,
            total_requests=self.requests,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            errors=self.errors,
            rate_limited=self.rate_limited,
            last_request_at=datetime.fromtimestamp(self.last_at, UTC) if self.last_at else None,
            cost_usd=self.cost_usd,
        )


class StatsWriter:
    """Collects :class:`UsageEvent` s and writes their sums to ``api_key_stats``.

    ``record`` is synchronous and touches only a dict, so the request path never waits on
    the database. A background task flushes every ``flush_interval_s``, or early once
    ``flush_max_events`` events are pending. A failed flush puts its sums back, so a
    database outage delays stats but loses none (memory is bounded by keys x groups).
    Must be used from one event loop; ``record`` is not thread-safe.
    """

    def __init__(
        self,
        sessionmaker: SessionFactory,
        *,
        flush_interval_s: float = 1.0,
        flush_max_events: int = 1000,
        logger: logging.Logger = _log,
        clock: Callable[[], float] = time.time,
        on_flush: Callable[[bool], None] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._max_events = flush_max_events
        self._logger = logger
        self._clock = clock
        self._on_flush = on_flush
        self._spool = spool
        self._pending: dict[RowKey, _Tally] = {}
        self._events = 0
        self._flush_lock = asyncio.Lock()
        self._loop = FlushLoop(self.flush, flush_interval_s, "stats writer", logger)
        self._outage = OutageLog(logger, "stats writer", describe_target(sessionmaker))

    @property
    def pending_events(self) -> int:
        return self._events

    @property
    def pending_rows(self) -> int:
        return len(self._pending)

    @property
    def healthy(self) -> bool:
        """False since a flush failed, until one succeeds."""
        return self._outage.healthy

    def record(self, event: UsageEvent) -> None:
        """Count ``event``: O(1), no I/O."""
        key = (event.provider, event.key_index, event.key_group)
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = _Tally(event.fingerprint)
        tally.add(event, event.at if event.at > 0 else self._clock())
        self._events += 1
        # While the database is down, retry on the interval only, not on every event.
        if self._events >= self._max_events and self._outage.healthy:
            self._loop.wake()

    async def start(self) -> None:
        if self._spool is not None:
            self._unspool(self._spool.take(SPOOL_KIND))
        self._loop.start()

    async def aclose(self) -> None:
        """Stop the background task, then write everything still pending (or spool it)."""
        if await self._loop.stop() or not self._pending:
            return
        if self._spool is not None and self._spool.put(SPOOL_KIND, self._spooled()):
            self._pending, self._events = {}, 0  # written at the next start
            return
        self._logger.error(
            "stats writer: shutting down with %d events (%d rows) unwritten",
            self._events,
            len(self._pending),
        )

    def _spooled(self) -> list[dict[str, object]]:
        return [
            {
                "provider": key[0],
                "key_index": key[1],
                "key_group": key[2],
                "fingerprint": t.fingerprint,
                "requests": t.requests,
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "errors": t.errors,
                "rate_limited": t.rate_limited,
                "last_at": t.last_at,
            }
            for key, t in self._pending.items()
        ]

    def _unspool(self, records: list[dict[str, Any]]) -> None:
        """Sums a previous process could not write; a malformed record is skipped, not fatal."""
        for record in records:
            try:
                key: RowKey = (
                    str(record["provider"]),
                    int(record["key_index"]),
                    None if record["key_group"] is None else int(record["key_group"]),
                )
                tally = _Tally(
                    str(record["fingerprint"]),
                    requests=int(record["requests"]),
                    prompt_tokens=int(record["prompt_tokens"]),
                    completion_tokens=int(record["completion_tokens"]),
                    errors=int(record["errors"]),
                    rate_limited=int(record["rate_limited"]),
                    last_at=float(record["last_at"]),
                )
            except (KeyError, TypeError, ValueError):
                self._logger.warning("stats writer: malformed spooled record skipped")
                continue
            self._restore({key: tally}, tally.requests)
        if records:
            self._loop.wake()

    async def flush(self) -> bool:
        """Write what is pending; on failure keep it for the next try and return False."""
        async with self._flush_lock:
            batch, events = self._pending, self._events
            self._pending, self._events = {}, 0
            if not batch:
                return True
            ok = await self._write_or_restore(batch, events)
        if self._on_flush is not None:
            self._on_flush(ok)
        return ok

    async def _write_or_restore(self, batch: dict[RowKey, _Tally], events: int) -> bool:
        written = False
        try:
            async with self._sessionmaker() as session:
                await KeyStatsRepository.from_session(session).upsert_batch(
                    [tally.delta(key) for key, tally in batch.items()]
                )
                await session.commit()
            written = True
        except DB_ERRORS as exc:
            self._outage.failed(exc, kept=f"{events} events")
        finally:
            if not written:
                self._restore(batch, events)
        if written:
            self._outage.succeeded()
        return written

    def _restore(self, batch: dict[RowKey, _Tally], events: int) -> None:
        for key, older in batch.items():
            newer = self._pending.get(key)
            if newer is None:
                self._pending[key] = older
            else:
                newer.absorb(older)
        self._events += events
