"""StatsWriter aggregation and failure handling, with a session factory that always fails."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.stats_writer import StatsWriter
from app.usage import UsageEvent


def refused() -> AsyncSession:
    raise ConnectionRefusedError("connection refused")


def event(provider: str = "groq", key_index: int = 0, group: int | None = 1) -> UsageEvent:
    return UsageEvent(provider, key_index, f"{provider}:{key_index}:abcd", group, 10, 5)


class TestRecord:
    def test_merges_events_of_one_key_and_group_into_one_row(self):
        writer = StatsWriter(refused)

        for _ in range(1000):
            writer.record(event())
        writer.record(event(group=None))
        writer.record(event(key_index=1))

        assert (writer.pending_events, writer.pending_rows) == (1002, 3)

    def test_needs_no_event_loop_and_does_no_io(self):
        writer = StatsWriter(refused, flush_max_events=1)

        writer.record(event())  # would raise if it touched the refusing factory

        assert writer.pending_events == 1


class TestFlushFailure:
    async def test_keeps_everything_and_warns_once(self, caplog: pytest.LogCaptureFixture):
        logger = logging.getLogger("test.unit.stats_writer")
        caplog.set_level(logging.INFO, logger=logger.name)
        writer = StatsWriter(refused, logger=logger)
        writer.record(event())

        results = [await writer.flush() for _ in range(3)]
        writer.record(event())

        assert results == [False, False, False]
        assert (writer.pending_events, writer.pending_rows) == (2, 1)
        assert not writer.healthy
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "ConnectionRefusedError" in warnings[0].getMessage()

    async def test_nothing_pending_is_a_successful_flush(self):
        assert await StatsWriter(refused).flush() is True
