"""UserGroupService keeps serving from memory when its database refuses every connection."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.user_groups import UserGroupService
from app.errors import DatabaseUnavailable
from app.timefmt import iso_utc


def refused() -> AsyncSession:
    raise ConnectionRefusedError("connection refused")


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    log = logging.getLogger("test.unit.user_groups")
    caplog.set_level(logging.INFO, logger=log.name)
    return log


class TestWithoutDatabase:
    async def test_new_users_get_balanced_groups_in_memory(self, logger: logging.Logger):
        svc = UserGroupService(refused, groups=4, logger=logger)

        groups = await asyncio.gather(*(svc.group_for(f"u{i}") for i in range(10)))

        assert Counter(groups) == {1: 3, 2: 3, 3: 2, 4: 2}
        assert svc.pending_users == 10
        assert await svc.flush() is False  # the request path never touched the database
        assert not svc.healthy

    async def test_one_assignment_for_concurrent_first_requests(self, logger: logging.Logger):
        svc = UserGroupService(refused, groups=4, logger=logger)

        groups = await asyncio.gather(*(svc.group_for("same") for _ in range(20)))

        assert set(groups) == {1}
        assert svc.sizes == {1: 1, 2: 0, 3: 0, 4: 0}

    async def test_warns_once_however_often_it_retries(
        self, logger: logging.Logger, caplog: pytest.LogCaptureFixture
    ):
        svc = UserGroupService(refused, groups=2, logger=logger)
        await svc.group_for("a")

        assert [await svc.flush() for _ in range(3)] == [False, False, False]
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

    async def test_full_queue_still_serves_and_warns_once(
        self, logger: logging.Logger, caplog: pytest.LogCaptureFixture
    ):
        svc = UserGroupService(refused, groups=2, max_pending=2, logger=logger)

        groups = [await svc.group_for(f"u{i}") for i in range(5)]

        assert groups == [1, 2, 1, 2, 1]
        assert svc.pending_users == 2
        assert caplog.text.count("save queue full") == 1

    async def test_unsaved_user_has_a_profile_and_others_need_the_database(
        self, logger: logging.Logger
    ):
        svc = UserGroupService(refused, groups=2, clock=lambda: 0.0, logger=logger)
        await svc.group_for("a")

        profile = await svc.get_profile("a")

        assert profile is not None
        assert (profile.api_key_group, profile.created_at) == (1, datetime(1970, 1, 1, tzinfo=UTC))
        with pytest.raises(DatabaseUnavailable):
            await svc.get_profile("b")
        with pytest.raises(DatabaseUnavailable):
            await svc.group_stats()
        with pytest.raises(DatabaseUnavailable):
            await svc.rebalance()

    def test_rejects_fewer_than_one_group(self):
        with pytest.raises(ValueError, match="groups"):
            UserGroupService(refused, groups=0)


class TestIsoformatUtc:
    def test_renders_utc_with_z(self):
        assert iso_utc(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"

    def test_none_stays_none(self):
        assert iso_utc(None) is None
