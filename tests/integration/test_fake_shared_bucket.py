"""The fake provider's shared-bucket mode over HTTP: every key 429s together once the account is empty."""

from __future__ import annotations

import httpx

from app.demo.fake_provider import FakeProviderConfig, FakeProviderThread, KeyBehaviour

BODY = {"model": "fake-small", "messages": [{"role": "user", "content": "hi"}]}


def post(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})


class TestSharedBucket:
    def test_every_key_is_limited_together_with_the_same_reset(self) -> None:
        keys = {k: KeyBehaviour() for k in ("k0", "k1", "k2")}
        config = FakeProviderConfig(keys=keys, shared_rpm=2)
        with FakeProviderThread(config) as fake, httpx.Client(base_url=fake.base_url) as client:
            assert post(client, "k0").status_code == 200
            second = post(client, "k1")
            assert second.status_code == 200
            assert second.headers["x-ratelimit-limit-requests"] == "2"
            assert second.headers["x-ratelimit-remaining-requests"] == "0"
            refused = [post(client, k) for k in ("k1", "k2", "k0")]
            assert [r.status_code for r in refused] == [429, 429, 429]
            # one account window: the same limit and (whole-second) Retry-After on every key
            assert len({r.headers["retry-after"] for r in refused}) == 1
            assert {r.headers["x-ratelimit-limit-requests"] for r in refused} == {"2"}
            assert int(refused[0].headers["retry-after"]) in range(58, 61)
