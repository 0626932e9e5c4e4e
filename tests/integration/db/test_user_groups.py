"""UserGroupService: balanced, race-safe, multi-instance-safe group assignment and rebalancing."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db.repositories import NewUser, UserRepository
from app.db.session import create_engine, create_sessionmaker
from app.db.stats_writer import StatsWriter
from app.db.user_groups import GroupStat, ProfileDTO, UserGroupService
from app.usage import UsageEvent
from tests.integration.db.conftest import SwitchableSessions

Sessions = async_sessionmaker[AsyncSession]
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def fixed_clock(at: float = T0) -> Callable[[], float]:
    return lambda: at


MakeService = Callable[..., Awaitable[UserGroupService]]


@pytest.fixture
async def make_service(engine: AsyncEngine) -> AsyncIterator[MakeService]:
    """Build and start services; all are closed at teardown, even when a test fails.

    Depends on ``engine`` so the services' final flush runs before it is disposed.
    """
    made: list[UserGroupService] = []

    async def make(factory: Callable[[], AsyncSession], groups: int, **kw: Any) -> UserGroupService:
        svc = UserGroupService(factory, groups, **{"flush_interval_s": 3600, **kw})
        made.append(svc)
        await svc.start()
        return svc

    yield make
    await asyncio.gather(*(svc.aclose() for svc in made))


@pytest.fixture
async def service(make_service: MakeService, sessionmaker: Sessions) -> UserGroupService:
    return await make_service(sessionmaker, 7, clock=fixed_clock())


async def stored_groups(sessionmaker: Sessions) -> dict[str, int]:
    async with sessionmaker() as session:
        return dict(await UserRepository.from_session(session).list_for_rebalance())


async def seed_users(sessionmaker: Sessions, groups: list[int]) -> list[str]:
    """Store users ``u00``, ``u01``… (oldest first) in the given groups."""
    users = [
        NewUser(f"u{i:02}", group, datetime.fromtimestamp(T0, UTC) + timedelta(seconds=i))
        for i, group in enumerate(groups)
    ]
    async with sessionmaker() as session:
        await UserRepository.from_session(session).insert_if_absent(users)
        await session.commit()
    return [u.user_id for u in users]


class TestFirstSight:
    async def test_200_concurrent_new_users_are_spread_within_one(
        self, service: UserGroupService, sessionmaker: Sessions
    ):
        users = [f"user-{i}" for i in range(200)]

        groups = await asyncio.gather(*(service.group_for(u) for u in users))
        sizes = Counter(groups)
        await service.aclose()

        assert set(sizes) == set(range(1, 8))
        assert max(sizes.values()) - min(sizes.values()) <= 1
        assert await stored_groups(sessionmaker) == dict(zip(users, groups, strict=True))

    async def test_50_concurrent_requests_of_one_new_user_store_one_group(
        self, service: UserGroupService, sessionmaker: Sessions
    ):
        groups = await asyncio.gather(*(service.group_for("alice") for _ in range(50)))
        await service.aclose()

        assert len(set(groups)) == 1
        assert await stored_groups(sessionmaker) == {"alice": groups[0]}
        assert sum(service.sizes.values()) == 1

    async def test_new_users_fill_the_least_loaded_stored_groups(
        self, make_service: MakeService, sessionmaker: Sessions
    ):
        await seed_users(sessionmaker, [1, 1, 2, 3])
        svc = await make_service(sessionmaker, 3)

        assert [await svc.group_for(f"new-{i}") for i in range(3)] == [2, 3, 1]

    async def test_known_user_keeps_its_stored_group_even_above_g(
        self, make_service: MakeService, sessionmaker: Sessions
    ):
        await seed_users(sessionmaker, [9])
        svc = await make_service(sessionmaker, 3)

        assert await svc.group_for("u00") == 9
        assert await stored_groups(sessionmaker) == {"u00": 9}


@pytest.fixture
async def two_instances(
    sessionmaker: Sessions, db_url: str
) -> AsyncIterator[tuple[UserGroupService, UserGroupService]]:
    """Two services on separate engines, as two gateway processes sharing one database.

    Their background savers are not started, so each has assigned a user before either
    saved it: the widest race window; the test then saves explicitly.
    """
    other_engine = create_engine(db_url)
    first = UserGroupService(sessionmaker, groups=3)
    second = UserGroupService(create_sessionmaker(other_engine), groups=3)
    yield first, second
    await asyncio.gather(first.aclose(), second.aclose())
    await other_engine.dispose()


class TestTwoInstances:
    async def test_same_new_user_gets_one_row_and_both_adopt_it(
        self, two_instances: tuple[UserGroupService, UserGroupService], sessionmaker: Sessions
    ):
        first, second = two_instances
        await first.group_for("earlier")  # loads group 1 on the first instance only

        a, b = await asyncio.gather(first.group_for("bob"), second.group_for("bob"))
        assert (a, b) == (2, 1)  # each instance chose from its own view of the sizes
        assert list(await asyncio.gather(first.flush(), second.flush())) == [True, True]

        stored = (await stored_groups(sessionmaker))["bob"]
        assert stored in (a, b)
        assert await first.group_for("bob") == stored
        assert await second.group_for("bob") == stored
        assert sum(first.sizes.values()) == 2
        assert sum(second.sizes.values()) == 1


class TestDatabaseOutage:
    async def test_users_get_groups_while_down_and_are_saved_when_back(
        self,
        make_service: MakeService,
        switchable: SwitchableSessions,
        sessionmaker: Sessions,
        caplog: pytest.LogCaptureFixture,
    ):
        logger = logging.getLogger("test.user_groups.outage")
        caplog.set_level(logging.INFO, logger=logger.name)
        await seed_users(sessionmaker, [1])
        switchable.down = True
        svc = await make_service(switchable, 2, logger=logger)

        groups = [await svc.group_for(u) for u in ("x", "y", "z")]
        assert await svc.flush() is False
        assert await svc.flush() is False
        assert svc.pending_users == 3

        switchable.down = False
        assert await svc.flush() is True

        assert await stored_groups(sessionmaker) == {"u00": 1, "x": 1, "y": 2, "z": 1}
        assert groups == [1, 2, 1]
        assert svc.sizes == {1: 3, 2: 1}  # re-read from the database once it was back
        levels = [r.levelno for r in caplog.records if r.name == logger.name]
        assert levels == [logging.WARNING, logging.INFO]

    async def test_user_stored_elsewhere_during_an_outage_is_adopted(
        self, make_service: MakeService, switchable: SwitchableSessions, sessionmaker: Sessions
    ):
        await seed_users(sessionmaker, [2])
        switchable.down = True  # from the start: nothing could be read into the cache
        svc = await make_service(switchable, 2)

        assert await svc.group_for("u00") == 1  # unknown while the database is down
        switchable.down = False
        assert await svc.flush() is True

        assert await svc.group_for("u00") == 2
        assert await stored_groups(sessionmaker) == {"u00": 2}


class TestProfiles:
    async def test_profile_of_new_unknown_and_unsaved_users(self, service: UserGroupService):
        group = await service.group_for("carol")
        expected = ProfileDTO("carol", group, "free", datetime.fromtimestamp(T0, UTC))

        assert await service.get_profile("carol") == expected  # not saved yet
        assert await service.flush()
        assert await service.get_profile("carol") == expected
        assert await service.get_profile("nobody") is None


class TestRebalance:
    async def test_evens_out_a_skewed_distribution_moving_the_fewest(
        self, make_service: MakeService, sessionmaker: Sessions
    ):
        users = await seed_users(sessionmaker, [1] * 10 + [2] * 2 + [5] * 3)
        svc = await make_service(sessionmaker, 3)
        assert await svc.group_for("u09") == 1  # cached before it moves

        result = await svc.rebalance()

        stored = await stored_groups(sessionmaker)
        assert (result.users, result.groups, result.moved) == (15, 3, 8)
        assert Counter(stored.values()) == {1: 5, 2: 5, 3: 5}
        assert all(stored[u] == 1 for u in users[:5])  # the oldest keep their group
        assert (
            sum(stored[u] != g for u, g in zip(users, [1] * 10 + [2] * 2 + [5] * 3, strict=True))
            == 8
        )
        assert await svc.group_for("u09") == stored["u09"] != 1
        assert svc.sizes == {1: 5, 2: 5, 3: 5}
        assert (await svc.rebalance()).moved == 0


class TestGroupStats:
    async def test_one_row_per_group_with_users_and_usage(self, sessionmaker: Sessions):
        await seed_users(sessionmaker, [1, 1, 3, 9])
        writer = StatsWriter(sessionmaker)
        for group, tokens in ((1, 10), (1, 5), (None, 100), (9, 7)):
            writer.record(UsageEvent("groq", 0, "groq:0:abcd", group, prompt_tokens=tokens, at=T0))
        assert await writer.flush()
        svc = UserGroupService(sessionmaker, groups=3)

        stats = await svc.group_stats()

        assert stats == [
            GroupStat(1, 2, 2, 15, "2026-01-01T00:00:00Z"),
            GroupStat(2, 0, 0, 0, None),
            GroupStat(3, 1, 0, 0, None),
        ]


class TestNeverWaitsOnTheDatabase:
    async def test_a_new_user_gets_a_group_at_once_from_a_database_that_never_answers(
        self, make_service: MakeService, sessionmaker: Sessions
    ):
        held: list[asyncio.StreamWriter] = []

        async def accept_and_say_nothing(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sessions = SwitchableSessions(sessionmaker, f"postgresql+asyncpg://u@127.0.0.1:{port}/db")
        try:
            svc = await make_service(sessions, 3)  # started healthy
            sessions.down = True  # then the database stops answering
            started = asyncio.get_running_loop().time()
            group = await svc.group_for("brand-new")
            assert asyncio.get_running_loop().time() - started < 0.5  # it used to wait 2 s
            assert group in (1, 2, 3)
        finally:
            for writer in held:
                writer.close()
            server.close()
            await sessions.dispose()

    async def test_returning_users_keep_their_group_from_the_first_request(
        self, make_service: MakeService, sessionmaker: Sessions
    ):
        await seed_users(sessionmaker, [3, 3])
        svc = await make_service(sessionmaker, 3)
        assert [await svc.group_for("u00"), await svc.group_for("u01")] == [3, 3]
