"""The gateway answers through real HTTP against the fake provider."""

from __future__ import annotations

import httpx

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import provider_env


def test_path_a_answers_with_keypool_headers(make_fake: FakeFactory, make_gateway: GatewayFactory):
    fake = make_fake({"a0": {}, "a1": {}})
    gateway = make_gateway(provider_env("alpha", fake, ["a0", "a1"]))
    response = httpx.post(
        f"{gateway.base_url}/api/chat", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["path"] == "A"
    assert body["content"] == "w0 w1 w2 w3 w4 "
    assert response.headers["x-keypool-provider"] == "alpha"
