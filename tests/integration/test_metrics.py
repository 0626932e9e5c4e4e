"""GET /metrics: Prometheus text with attempts by result and key states, never key material."""

from __future__ import annotations

import httpx

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import provider_env

HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def test_metrics_count_attempts_and_show_key_states(
    make_fake: FakeFactory, make_gateway: GatewayFactory
):
    keys = ["good-key-0000000000", "dead-key-0000000000"]
    fake = make_fake({keys[0]: {}, keys[1]: {"mode": "unauthorized"}})
    gateway = make_gateway(provider_env("alpha", fake, keys))
    with httpx.Client(base_url=gateway.base_url) as client:
        for _ in range(4):
            assert client.post("/api/chat", json=HELLO).status_code == 200
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    good, dead = "alpha:0:0000", "alpha:1:0000"
    assert (
        f'keypool_upstream_attempts_total{{key="{good}",provider="alpha",result="ok"}} 4.0' in text
    )
    assert (
        f'keypool_upstream_attempts_total{{key="{dead}",provider="alpha",result="error"}} 1.0'
        in text
    )
    assert (
        f'keypool_key_state{{key="{dead}",key_index="1",provider="alpha",state="failed"}} 1.0'
        in text
    )
    assert (
        f'keypool_key_state{{key="{good}",key_index="0",provider="alpha",state="active"}} 1.0'
        in text
    )
    assert 'keypool_circuit_state{provider="alpha",state="closed"} 1.0' in text
    assert all(key not in text for key in keys)
