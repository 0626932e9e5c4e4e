"""Repository SQL behaves the same on SQLite and Postgres: upserts add, conflicts are no-ops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import ApiKeyStats
from app.db.repositories import KeyStatsRepository, NewUser, StatsDelta, UserRepository

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]


def delta(group: int | None, requests: int = 1, at: datetime | None = T0) -> StatsDelta:
    return StatsDelta(
        provider="groq",
        key_index=0,
        key_fingerprint="groq:0:abcd",
        key_group=group,
        total_requests=requests,
        prompt_tokens=10 * requests,
        completion_tokens=5 * requests,
        errors=0,
        rate_limited=0,
        last_request_at=at,
    )


async def upsert(sessionmaker: Sessions, *rows: StatsDelta) -> None:
    async with sessionmaker() as session:
        await KeyStatsRepository.from_session(session).upsert_batch(rows)
        await session.commit()


async def stats_rows(sessionmaker: Sessions) -> list[ApiKeyStats]:
    async with sessionmaker() as session:
        return await KeyStatsRepository.from_session(session).all()


class TestKeyStatsUpsert:
    async def test_null_group_is_one_row_that_accumulates(self, sessionmaker: Sessions):
        await upsert(sessionmaker, delta(None, 2))
        await upsert(sessionmaker, delta(None, 3))

        [row] = await stats_rows(sessionmaker)
        assert (row.key_group, row.total_requests, row.total_tokens) == (None, 5, 75)

    async def test_last_request_at_keeps_the_latest_time(self, sessionmaker: Sessions):
        later = T0 + timedelta(minutes=5)
        await upsert(sessionmaker, delta(1, at=later))
        await upsert(sessionmaker, delta(1, at=T0))
        await upsert(sessionmaker, delta(1, at=None))

        [row] = await stats_rows(sessionmaker)
        assert row.last_request_at == later

    async def test_concurrent_upserts_of_the_same_row_all_count(self, sessionmaker: Sessions):
        await asyncio.gather(*(upsert(sessionmaker, delta(g, 1)) for g in [1, None] * 10))

        rows = await stats_rows(sessionmaker)
        assert {r.key_group: r.total_requests for r in rows} == {1: 10, None: 10}

    async def test_schema_rejects_a_second_null_group_row(self, sessionmaker: Sessions):
        async with sessionmaker() as session:
            for _ in range(2):
                session.add(ApiKeyStats(provider="p", key_index=0, key_fingerprint="f"))
            with pytest.raises(IntegrityError):
                await session.commit()


class TestUserRepository:
    async def test_insert_if_absent_keeps_the_first_row(self, sessionmaker: Sessions):
        async with sessionmaker() as session:
            repo = UserRepository.from_session(session)
            await repo.insert_if_absent([NewUser("alice", 2, T0)])
            await repo.insert_if_absent([NewUser("alice", 3, T0), NewUser("bob", 3, T0)])
            await session.commit()

        async with sessionmaker() as session:
            repo = UserRepository.from_session(session)
            assert await repo.groups_of(["alice", "bob", "carol"]) == {"alice": 2, "bob": 3}
            assert await repo.group_sizes() == {2: 1, 3: 1}
            profile = await repo.get("alice")
        assert profile is not None
        assert (profile.tier, profile.created_at) == ("free", T0)

    async def test_update_groups_moves_only_the_given_users(self, sessionmaker: Sessions):
        users = [NewUser(f"u{i}", 1, T0 + timedelta(seconds=i)) for i in range(3)]
        async with sessionmaker() as session:
            repo = UserRepository.from_session(session)
            await repo.insert_if_absent(users)
            await repo.update_groups({"u2": 4})
            await session.commit()
            assert await repo.list_for_rebalance() == [("u0", 1), ("u1", 1), ("u2", 4)]
