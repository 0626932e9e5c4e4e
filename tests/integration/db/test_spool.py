"""Stopping with the database down loses nothing: the spool file carries it to the next start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.repositories import KeyStatsRepository, UserRepository
from app.db.spool import Spool
from app.db.stats_writer import StatsWriter
from app.db.user_groups import UserGroupService
from app.usage import UsageEvent
from tests.integration.db.conftest import SwitchableSessions

T0 = 1_767_225_600.0


async def test_stats_and_users_unwritten_at_a_down_shutdown_are_written_at_the_next_start(
    switchable: SwitchableSessions,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    spool = Spool(tmp_path / "keypool-spool.jsonl")
    switchable.down = True
    stats = StatsWriter(switchable, spool=spool)
    groups = UserGroupService(switchable, 3, spool=spool)
    await stats.start()
    await groups.start()
    stats.record(UsageEvent("groq", 0, "groq:0:abcd", 1, prompt_tokens=5, at=T0))
    stats.record(UsageEvent("groq", 0, "groq:0:abcd", 1, completion_tokens=7, at=T0 + 1))
    ann = await groups.group_for("ann")
    await stats.aclose()
    await groups.aclose()
    assert spool.path.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # The next process, with the database back.
    switchable.down = False
    stats2 = StatsWriter(sessionmaker, spool=spool)
    groups2 = UserGroupService(sessionmaker, 3, spool=spool)
    await stats2.start()
    await groups2.start()
    assert await groups2.group_for("ann") == ann
    await stats2.aclose()
    await groups2.aclose()
    assert not spool.path.exists()
    async with sessionmaker() as session:
        rows = await KeyStatsRepository.from_session(session).all()
        user = await UserRepository.from_session(session).get("ann")
    assert [(r.total_requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [(2, 5, 7)]
    assert user is not None
    assert user.api_key_group == ann


async def test_a_clean_shutdown_with_nothing_pending_logs_no_error(
    switchable: SwitchableSessions, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    switchable.down = True
    groups = UserGroupService(switchable, 3, spool=Spool(tmp_path / "s.jsonl"))
    await groups.start()
    await groups.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not (tmp_path / "s.jsonl").exists()


def test_a_spool_keeps_other_kinds_and_skips_unreadable_lines(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    spool.put("stats", [{"a": 1}])
    spool.put("user", [{"b": 2}])
    with spool.path.open("ab") as file:
        file.write(b"not json\n")
    assert spool.take("user") == [{"b": 2}]
    assert spool.take("stats") == [{"a": 1}]
    assert not spool.path.exists()
