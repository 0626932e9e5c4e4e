"""The fair line admits with the learned turn rate when no rpm is configured (injected clock)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from app.chat.fallback import turn_rate
from app.errors import RateLimited
from app.keys.backoff import WaitPolicy
from app.keys.pacing import REQUEST_HEADROOM
from tests.unit.chat.test_fallback import T0, Harness, provider


def learn(h: Harness, name: str, per_minute: int) -> None:
    for status in h.store.pools[name].statuses:
        status.learned_requests, status.learned_requests_window = per_minute, 60.0


async def test_a_line_longer_than_the_deadline_at_the_learned_rate_is_refused_at_once():
    h = Harness([provider("alpha", 1)], policy=WaitPolicy(deadline_s=1.5))
    learn(h, "alpha", 60)  # one start per ~1 s, learned from the provider's headers
    assert await h.run() == ("alpha", 0)
    answered: list[float] = []

    async def timed() -> object:
        try:
            return await h.run()
        except RateLimited as exc:
            return exc
        finally:
            answered.append(h.clock() - T0)

    results = await asyncio.gather(*(timed() for _ in range(4)))
    assert results[0] == ("alpha", 0)  # ~1 s away: waits in line and is served
    refused = [r for r in results[1:] if isinstance(r, RateLimited)]
    assert len(refused) == 3
    # The line knows a turn comes every ~1 s: the last two waiters cannot make their 1.5 s
    # deadline, so they are told at once instead of after waiting ~1 s for nothing.
    assert sorted(answered)[:3] == pytest.approx([0.0, 0.0, 1 + REQUEST_HEADROOM])


def test_a_configured_burst_lowers_the_configured_turn_rate():
    config = dataclasses.replace(provider("alpha", 2), rpm_per_key=30, burst_per_key=5)
    assert turn_rate(config) == pytest.approx(2 * 26 / 60 / (1 + REQUEST_HEADROOM))
