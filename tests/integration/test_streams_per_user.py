"""MAX_STREAMS_PER_USER: one user cannot hold more streams than that; others are unaffected."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import HELLO, wait_for


@pytest.fixture
def gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    slow = {"chunks": 20, "chunk_interval_ms": 100}
    fake = make_fake({"k0": slow, "k1": slow})
    return make_gateway({**provider_env("alpha", fake, ["k0", "k1"]), "MAX_STREAMS_PER_USER": "1"})


def test_a_second_stream_of_the_same_user_is_refused_until_the_first_ends(
    gateway: GatewayServer,
) -> None:
    url = f"{gateway.base_url}/api/chat/stream"
    alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
    with httpx.Client(timeout=20) as client:
        with client.stream("POST", url, json=HELLO, headers=alice) as first:
            assert first.status_code == 200
            second = client.post(url, json=HELLO, headers=alice)
            assert second.status_code == 429
            assert second.json()["error"]["type"] == "too_many_streams"
            v1 = client.post(
                f"{gateway.base_url}/v1/chat/completions",
                json={"model": "auto", "stream": True, "user": "alice", **HELLO},
            )
            assert v1.status_code == 429
            assert v1.json()["error"]["type"] == "rate_limit_error"
            with client.stream("POST", url, json=HELLO, headers=bob) as other:
                assert other.status_code == 200
        # The first stream was closed early: its slot is freed.
        wait_for(
            lambda: client.post(url, json=HELLO, headers=alice).status_code == 200 or None,
            timeout=10,
            what="alice's slot to be freed",
        )
