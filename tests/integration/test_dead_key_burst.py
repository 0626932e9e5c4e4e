"""A burst on a provider with one dead key: its failures must not open the provider's breaker.

The cause of a rare 503 in the usage-stats shutdown test: concurrent requests all reached the
key answering 500 before its first failure came back; their late failures counted as five in
a row, the breaker opened, and requests arriving before the healthy keys' answers closed it
again were refused for the whole provider.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import ADMIN_TOKEN, key_health, wait_for
from tests.support.traffic import post_all

HI = {"messages": [{"role": "user", "content": "hi"}], "model": "alpha/fake-small"}


@pytest.fixture
def gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    # The dead key answers at once; the healthy ones take a second.
    slow = {"latency_ms": 1000}
    keys = {"k-ok-0": slow, "k-dead": {"mode": "error_500"}, "k-ok-2": slow}
    fake = make_fake(keys)
    return make_gateway({**provider_env("alpha", fake, list(keys)), "ADMIN_TOKEN": ADMIN_TOKEN})


async def test_requests_during_a_burst_on_a_dead_key_are_served(gateway: GatewayServer) -> None:
    burst = asyncio.create_task(
        post_all(gateway.base_url, "/api/chat", [({}, HI)] * 18, concurrency=18)
    )
    await asyncio.to_thread(
        wait_for,
        lambda: key_health(gateway.base_url, "alpha")[1]["state"] == "failed" or None,
        10,
        "the dead key to be marked failed",
    )
    during = await post_all(gateway.base_url, "/api/chat", [({}, HI)] * 3, concurrency=3)
    assert [status for status, _ in during] == [200] * 3, [b for s, b in during if s != 200][:1]
    assert [status for status, _ in await burst] == [200] * 18
