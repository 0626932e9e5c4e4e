"""StatsWriter stores exact usage sums, early and on shutdown, and survives a database outage."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db.repositories import KeyStatsRepository
from app.db.session import create_engine, create_sessionmaker
from app.db.stats_writer import StatsWriter
from app.usage import UsageEvent
from tests.integration.db.conftest import SwitchableSessions
from tests.support.databases import closed_port

Sessions = async_sessionmaker[AsyncSession]
Key = tuple[str, int, int | None]
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PROVIDERS = {"groq": 3, "cerebras": 2, "openrouter": 4}


def mixed_events(n: int, seed: int = 7) -> list[UsageEvent]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        provider = rng.choice(sorted(PROVIDERS))
        key_index = rng.randrange(PROVIDERS[provider])
        rate_limited = rng.random() < 0.1
        events.append(
            UsageEvent(
                provider=provider,
                key_index=key_index,
                fingerprint=f"{provider}:{key_index}:ab{key_index}z",
                key_group=rng.choice([None, 1, 2, 3, 4]),
                prompt_tokens=rng.randrange(0, 500),
                completion_tokens=rng.randrange(0, 300),
                error=rate_limited or rng.random() < 0.05,
                rate_limited=rate_limited,
                at=T0 + i,
            )
        )
    return events


def expected_sums(events: list[UsageEvent]) -> dict[Key, tuple[int, ...]]:
    sums: dict[Key, Counter[str]] = {}
    last: dict[Key, float] = {}
    for e in events:
        key = (e.provider, e.key_index, e.key_group)
        c = sums.setdefault(key, Counter())
        c.update(
            requests=1,
            tokens=e.prompt_tokens + e.completion_tokens,
            prompt=e.prompt_tokens,
            completion=e.completion_tokens,
            errors=int(e.error),
            rate_limited=int(e.rate_limited),
        )
        last[key] = max(last.get(key, 0.0), e.at)
    fields = ("requests", "tokens", "prompt", "completion", "errors", "rate_limited")
    return {k: (*(c[f] for f in fields), int(last[k])) for k, c in sums.items()}


async def stored_sums(sessionmaker: Sessions) -> dict[Key, tuple[int, ...]]:
    async with sessionmaker() as session:
        rows = await KeyStatsRepository.from_session(session).all()
    return {
        (r.provider, r.key_index, r.key_group): (
            r.total_requests,
            r.total_tokens,
            r.prompt_tokens,
            r.completion_tokens,
            r.errors,
            r.rate_limited,
            int(r.last_request_at.timestamp()) if r.last_request_at else 0,
        )
        for r in rows
    }


def flush_signal() -> tuple[asyncio.Event, Callable[[bool], None]]:
    """An event set after each successful background flush."""
    done = asyncio.Event()
    return done, lambda ok: done.set() if ok else None


Start = Callable[[StatsWriter], Awaitable[StatsWriter]]


@pytest.fixture
async def start(engine: AsyncEngine) -> AsyncIterator[Start]:
    """Start writers and close them at teardown (before ``engine`` is disposed)."""
    started: list[StatsWriter] = []

    async def run(writer: StatsWriter) -> StatsWriter:
        started.append(writer)
        await writer.start()
        return writer

    yield run
    await asyncio.gather(*(w.aclose() for w in started))


class TestExactTotals:
    async def test_mixed_events_sum_exactly_across_background_flushes(
        self, start: Start, sessionmaker: Sessions
    ):
        events = mixed_events(1000)
        flushed, on_flush = flush_signal()
        writer = StatsWriter(
            sessionmaker, flush_interval_s=3600, flush_max_events=100, on_flush=on_flush
        )
        await start(writer)

        for i, event in enumerate(events):
            writer.record(event)
            if i == 149:  # past flush_max_events: the task wakes without waiting an hour
                await asyncio.wait_for(flushed.wait(), timeout=10)
        await writer.aclose()

        assert await stored_sums(sessionmaker) == expected_sums(events)
        assert (writer.pending_events, writer.pending_rows) == (0, 0)

    async def test_shutdown_flush_writes_everything(self, start: Start, sessionmaker: Sessions):
        events = mixed_events(300, seed=11)
        writer = StatsWriter(sessionmaker, flush_interval_s=3600, flush_max_events=10**6)
        await start(writer)
        for event in events:
            writer.record(event)
        assert writer.pending_events == 300

        await writer.aclose()

        assert await stored_sums(sessionmaker) == expected_sums(events)

    async def test_interval_flush_without_reaching_max_events(
        self, start: Start, sessionmaker: Sessions
    ):
        flushed, on_flush = flush_signal()
        writer = StatsWriter(
            sessionmaker, flush_interval_s=0.05, flush_max_events=10**6, on_flush=on_flush
        )
        await start(writer)
        writer.record(UsageEvent("groq", 0, "groq:0:abcd", None, prompt_tokens=3, at=T0))

        await asyncio.wait_for(flushed.wait(), timeout=10)

        assert await stored_sums(sessionmaker) == {("groq", 0, None): (1, 3, 3, 0, 0, 0, int(T0))}
        await writer.aclose()

    async def test_two_writers_flushing_the_same_rows_at_once_add_up(self, sessionmaker: Sessions):
        first, second = mixed_events(500, seed=1), mixed_events(500, seed=2)
        writers = [StatsWriter(sessionmaker), StatsWriter(sessionmaker)]
        for writer, events in zip(writers, (first, second), strict=True):
            for event in events:
                writer.record(event)

        assert await asyncio.gather(*(w.flush() for w in writers)) == [True, True]

        assert await stored_sums(sessionmaker) == expected_sums(first + second)

    async def test_event_without_time_uses_the_injected_clock(self, sessionmaker: Sessions):
        writer = StatsWriter(sessionmaker, clock=lambda: T0 + 42)
        writer.record(UsageEvent("groq", 1, "groq:1:abcd", 2))

        assert await writer.flush()

        async with sessionmaker() as session:
            [row] = await KeyStatsRepository.from_session(session).all()
        assert row.last_request_at == datetime.fromtimestamp(T0 + 42, UTC)


class TestDatabaseOutage:
    async def test_nothing_is_lost_and_one_warning_is_logged(
        self,
        switchable: SwitchableSessions,
        sessionmaker: Sessions,
        caplog: pytest.LogCaptureFixture,
    ):
        logger = logging.getLogger("test.stats_writer.outage")
        caplog.set_level(logging.INFO, logger=logger.name)
        events = mixed_events(400, seed=3)
        writer = StatsWriter(switchable, logger=logger)
        switchable.down = True

        for batch in (events[:100], events[100:250], events[250:]):
            for event in batch:
                writer.record(event)
            assert await writer.flush() is False
        assert writer.pending_events == 400
        assert not writer.healthy

        switchable.down = False
        assert await writer.flush() is True

        assert await stored_sums(sessionmaker) == expected_sums(events)
        assert writer.healthy
        levels = [r.levelno for r in caplog.records if r.name == logger.name]
        assert levels == [logging.WARNING, logging.INFO]

    async def test_shutdown_while_down_reports_what_is_unwritten(
        self, start: Start, switchable: SwitchableSessions, caplog: pytest.LogCaptureFixture
    ):
        logger = logging.getLogger("test.stats_writer.shutdown")
        caplog.set_level(logging.INFO, logger=logger.name)
        writer = StatsWriter(switchable, logger=logger)
        switchable.down = True
        await start(writer)
        writer.record(UsageEvent("groq", 0, "groq:0:abcd", 1, at=T0))

        await writer.aclose()

        assert writer.pending_events == 1
        assert "1 events (1 rows) unwritten" in caplog.text


class TestLogging:
    async def test_outage_warning_masks_the_database_password(
        self, caplog: pytest.LogCaptureFixture
    ):
        logger = logging.getLogger("test.stats_writer.mask")
        caplog.set_level(logging.INFO, logger=logger.name)
        engine = create_engine(f"postgresql+asyncpg://keypool:s3cret@127.0.0.1:{closed_port()}/db")
        writer = StatsWriter(create_sessionmaker(engine), logger=logger)
        writer.record(UsageEvent("groq", 0, "groq:0:abcd", None, at=T0))

        assert await writer.flush() is False
        await engine.dispose()

        assert "keypool:***@127.0.0.1" in caplog.text
        assert "s3cret" not in caplog.text
