"""Path A (several providers) waits in the fair line of the provider that frees up first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.chat.fallback import FallbackRunner
from app.chat.routing import Route
from app.keys.model import Outcome
from app.providers.client import ProviderClient
from tests.unit.chat.test_fallback import Harness, provider


async def served_for(runner: FallbackRunner, route: Route, user: str, order: list[str]) -> str:
    async def attempt(client: ProviderClient) -> str:
        order.append(user)
        return client.provider.name

    success = await runner.run(route, attempt, user_id=user)
    await success.lease.finish(Outcome.OK)
    return success.value


class TestPathALine:
    async def test_a_waiter_joins_the_line_of_the_provider_back_first(self):
        h = Harness([provider("alpha", 1), provider("beta", 1)])
        await h.cool("alpha", 5.0)
        await h.cool("beta", 2.0)
        assert await h.run(path="A") == ("beta", 0)
        assert list(h.runner.gates) == ["beta"]  # not alpha's line, not a bare reservation
        assert h.sleep.naps[0] == pytest.approx(2.0, abs=0.06)

    async def test_a_later_user_is_not_queued_behind_another_users_burst(self):
        h = Harness([provider("alpha", 1), provider("beta", 1)])
        await h.cool("alpha", 5.0)
        await h.cool("beta", 2.0)
        order: list[str] = []
        route = h.route("A")
        users = ["bursty"] * 3 + ["polite"]
        results: list[Any] = await asyncio.gather(
            *(served_for(h.runner, route, u, order) for u in users)
        )
        assert results == ["beta"] * 4
        assert order == ["bursty", "polite", "bursty", "bursty"]

    async def test_a_free_key_is_taken_at_once_without_any_line(self):
        h = Harness([provider("alpha", 1), provider("beta", 1)])
        await h.cool("alpha", 5.0)
        assert await h.run(path="A") == ("beta", 0)
        assert (h.runner.gates, h.sleep.naps) == ({}, [])
