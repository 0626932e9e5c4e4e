"""One gateway with REDIS_URL: readiness, what it stores in Redis, and life without Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.redis_server import SHARED_URL, free_port, shared_prefix
from tests.support.servers import GatewayServer, provider_env
from tests.support.traffic import post_all

TOKEN = "redis-store-admin-token"
HI = {"messages": [{"role": "user", "content": "hi"}]}
SECRETS = ["sk-live-0123456789abcdefWXYZ", "sk-live-9876543210fedcbaQRST", "tiny"]


@pytest.fixture
def prefix() -> Iterator[str]:
    with shared_prefix() as namespace:
        yield namespace


def readyz(gateway: GatewayServer) -> dict[str, object]:
    answer = httpx.get(f"{gateway.base_url}/readyz", timeout=10)
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


def chat(gateway: GatewayServer, n: int = 1) -> list[int]:
    replies = [httpx.post(f"{gateway.base_url}/api/chat", json=HI, timeout=10) for _ in range(n)]
    assert [r.status_code for r in replies] == [200] * n, replies[-1].text
    return [int(r.json()["key_index"]) for r in replies]


def state_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "keypool.state" and r.levelno == logging.WARNING
    ]


class TestWithRedis:
    def test_readiness_reports_redis_and_chat_runs_on_the_shared_pool(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, prefix: str
    ):
        fake = make_fake({"k0": {}, "k1": {}, "k2": {}})
        env = provider_env("alpha", fake, ["k0", "k1", "k2"])
        gateway = make_gateway({**env, "REDIS_URL": SHARED_URL, "KEYPOOL_REDIS_PREFIX": prefix})
        assert readyz(gateway) == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
        assert chat(gateway, 6) == [0, 1, 2, 0, 1, 2]
        with redis.Redis.from_url(SHARED_URL) as client:
            assert client.exists(f"{prefix}pool:alpha")

    def test_redis_holds_indexes_never_key_material(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, prefix: str
    ):
        fake = make_fake(
            {SECRETS[0]: {"mode": "rate_limited", "retry_after_s": 30}, SECRETS[1]: {}, "tiny": {}}
        )
        env = provider_env("alpha", fake, SECRETS)
        gateway = make_gateway(
            {**env, "REDIS_URL": SHARED_URL, "KEYPOOL_REDIS_PREFIX": prefix, "ADMIN_TOKEN": TOKEN}
        )
        chat(gateway, 4)
        disabled = httpx.post(
            f"{gateway.base_url}/api/admin/api-keys/alpha/2/disable",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert disabled.status_code == 200
        with redis.Redis.from_url(SHARED_URL) as client:
            names = list(client.scan_iter(match=f"{prefix}*"))
            dumped = b"".join(names)
            for name in names:
                dumped += client.dump(name) or b""
        assert sorted(n.decode().removeprefix(prefix) for n in names) == ["instances", "pool:alpha"]
        for secret in SECRETS:
            assert secret.encode() not in dumped
            assert secret[-4:].encode() not in dumped


class TestWithoutRedis:
    def test_an_unreachable_redis_at_start_up_degrades_readiness_not_service(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        caplog: pytest.LogCaptureFixture,
    ):
        fake = make_fake({"k0": {}, "k1": {}})
        env = provider_env("alpha", fake, ["k0", "k1"])
        gateway = make_gateway({**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        assert chat(gateway, 6) == [0, 1, 0, 1, 0, 1]
        degraded = {"status": "degraded", "checks": {"database": "ok", "redis": "down"}}
        assert readyz(gateway) == degraded
        assert len(state_warnings(caplog)) == 1

    def test_several_workers_without_redis_each_keep_to_their_share(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        caplog: pytest.LogCaptureFixture,
    ):
        caplog.set_level(logging.INFO, logger="keypool")
        fake = make_fake({"k0": {}})
        env = provider_env("alpha", fake, ["k0"], rpm_per_key="600")
        # a deadline as short as the queue bound: the excess is refused, not left to wait in line
        short = {"PACING_MAX_WAIT_S": "0.5", "REQUEST_DEADLINE_S": "0.5"}
        gateway = make_gateway({**env, "WEB_CONCURRENCY": "2", **short})
        answers = asyncio.run(post_all(gateway.base_url, "/api/chat", [({}, HI)] * 10, 10))
        served = sum(1 for status, _ in answers if status == 200)
        # 600 RPM shared by two workers: one start every ~0.2 s, so the 0.5 s queue holds three
        # (alone, this worker would start one every ~0.1 s: five or six).
        assert 3 <= served <= 4
        assert readyz(gateway)["checks"] == {"database": "ok", "redis": "off"}
        notes = [r.getMessage() for r in caplog.records if "WEB_CONCURRENCY=2" in r.getMessage()]
        assert len(notes) == 1
        assert "1/2" in notes[0]
