"""Burst-tolerant pacing over HTTP: an idle key serves its burst at once, the excess is refused
by the gateway (fast 429) and the fake provider, enforcing the same rpm, never answers 429."""

from __future__ import annotations

import asyncio
import time

import httpx

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import provider_env

HI = {"messages": [{"role": "user", "content": "hi"}]}


def upstream_statuses(fake: FakeProviderThread) -> dict[str, int]:
    totals: dict[str, int] = {}
    for counters in fake.stats()["keys"].values():
        for status, n in counters["status"].items():
            totals[status] = totals.get(status, 0) + n
    return totals


async def test_an_idle_key_serves_its_burst_at_once_and_never_draws_an_upstream_429(
    make_fake: FakeFactory, make_gateway: GatewayFactory
) -> None:
    fake = make_fake({"k0": {"rpm": 6}})
    env = provider_env("alpha", fake, ["k0"], rpm_per_key="6", burst_per_key="3")
    gateway = make_gateway({**env, "PACING_MAX_WAIT_S": "1", "REQUEST_DEADLINE_S": "1"})
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        burst = await asyncio.gather(
            *(client.post(f"{gateway.base_url}/api/chat", json=HI) for _ in range(3))
        )
        elapsed = time.monotonic() - started
        # Spaced one by one, the third would wait 20 s; with the burst, all three go at once.
        assert [a.status_code for a in burst] == [200, 200, 200]
        assert elapsed < 5
        excess = await client.post(f"{gateway.base_url}/api/chat", json=HI)
    # The next turn is ~15 s away (the spacing widened after the burst): refused, not sent.
    assert excess.status_code == 429
    assert excess.json()["error"]["type"] == "rate_limited"
    assert upstream_statuses(fake) == {"200": 3}
