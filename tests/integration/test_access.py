"""Access control over real HTTP: client keys, the service token, per-user limits, budgets, CORS."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.redis_server import SHARED_URL, shared_prefix
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import wait_for

ADMIN = f"admin-{secrets.token_hex(12)}"
SERVICE = f"service-{secrets.token_hex(12)}"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
HI = {"messages": [{"role": "user", "content": "hi"}]}
V1 = {"model": "auto", "messages": HI["messages"]}


def start(make_fake: FakeFactory, make_gateway: GatewayFactory, **env: str) -> GatewayServer:
    fake = make_fake({"k0": {}, "k1": {}})
    return make_gateway({**provider_env("alpha", fake, ["k0", "k1"]), "ADMIN_TOKEN": ADMIN, **env})


def new_key(gateway: GatewayServer, **body: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{gateway.base_url}/api/admin/clients", json={"user_id": "alice", **body}, headers=AUTH
    )
    assert answer.status_code == 201, answer.text
    entry: dict[str, Any] = answer.json()
    return entry


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def user_entry(gateway: GatewayServer, user: str) -> httpx.Response:
    return httpx.get(f"{gateway.base_url}/api/admin/users/{user}", headers=AUTH)


@pytest.fixture
def token_gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    return start(make_fake, make_gateway, AUTH_MODE="token")


class TestTokenMode:
    def test_chat_routes_need_a_client_key(self, token_gateway: GatewayServer):
        url = token_gateway.base_url
        for path, body in (("/api/chat", HI), ("/api/chat/stream", HI), ("/api/chat/batch", {})):
            answer = httpx.post(url + path, json=body)
            assert answer.status_code == 401, path
            assert answer.json()["error"]["type"] == "unauthorized"
        for answer in (
            httpx.post(f"{url}/v1/chat/completions", json=V1, headers=bearer("kp-unknown")),
            httpx.get(f"{url}/v1/models"),
        ):
            assert answer.status_code == 401
            error = answer.json()["error"]
            assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
        assert httpx.get(f"{url}/healthz").status_code == 200

    def test_a_created_key_chats_as_its_user_and_cannot_impersonate(
        self, token_gateway: GatewayServer
    ):
        created = new_key(token_gateway, name="laptop", tier="pro")
        assert set(created) == {
            "id", "key", "key_prefix", "user_id", "tier", "name", "rpm",
            "daily_budget_usd", "created_at",
        }  # fmt: skip
        assert created["key"].startswith("kp-")
        assert len(created["key"]) >= 25
        assert created["key_prefix"] == created["key"][:8]
        assert (created["user_id"], created["tier"], created["name"]) == ("alice", "pro", "laptop")

        answer = httpx.post(
            f"{token_gateway.base_url}/api/chat",
            json={**HI, "user_id": "mallory"},
            headers=bearer(created["key"], **{"X-User-Id": "mallory"}),
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ratelimit-limit-requests"] == "30"
        assert answer.headers["x-ratelimit-remaining-requests"] == "29"
        assert answer.headers["x-ratelimit-reset-requests"] == "1m1s"  # 60-61 s: whole buckets
        v1 = httpx.post(
            f"{token_gateway.base_url}/v1/chat/completions",
            json={**V1, "user": "mallory"},
            headers=bearer(created["key"]),
        )
        assert v1.status_code == 200, v1.text
        assert v1.headers["x-ratelimit-remaining-requests"] == "28"
        assert user_entry(token_gateway, "alice").status_code == 200
        assert user_entry(token_gateway, "mallory").status_code == 404

    def test_listing_hides_keys_and_revoking_locks_the_key_out(self, token_gateway: GatewayServer):
        created = new_key(token_gateway)
        url = token_gateway.base_url
        listed = httpx.get(f"{url}/api/admin/clients", headers=AUTH).json()["clients"]
        assert [c["id"] for c in listed] == [created["id"]]
        assert "key" not in listed[0]
        assert listed[0]["revoked_at"] is None
        assert created["key"] not in orjson.dumps(listed).decode()

        revoked = httpx.delete(f"{url}/api/admin/clients/{created['id']}", headers=AUTH)
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        answer = httpx.post(f"{url}/api/chat", json=HI, headers=bearer(created["key"]))
        assert answer.status_code == 401

        for bad in ("999", "99999999999999999999999", "abc", "-1"):
            missing = httpx.delete(f"{url}/api/admin/clients/{bad}", headers=AUTH)
            assert missing.status_code == 404, bad
            assert missing.json()["error"]["type"] == "unknown_client"

    def test_admin_token_and_client_keys_do_not_open_each_others_doors(
        self, token_gateway: GatewayServer
    ):
        key = new_key(token_gateway)["key"]
        url = token_gateway.base_url
        assert httpx.post(f"{url}/api/chat", json=HI, headers=AUTH).status_code == 401
        admin = httpx.get(f"{url}/api/admin/clients", headers=bearer(key))
        assert admin.status_code == 401

    def test_the_openai_sdk_uses_a_client_key_and_sees_revocation(
        self, token_gateway: GatewayServer
    ):
        created = new_key(token_gateway)
        with OpenAI(
            base_url=f"{token_gateway.base_url}/v1", api_key=created["key"], max_retries=0
        ) as sdk:
            reply = sdk.chat.completions.create(model="auto", messages=HI["messages"])  # type: ignore[arg-type]
            assert reply.choices[0].message.content
            assert [m.id for m in sdk.models.list()]
            httpx.delete(
                f"{token_gateway.base_url}/api/admin/clients/{created['id']}", headers=AUTH
            )
            with pytest.raises(openai.AuthenticationError):
                sdk.chat.completions.create(model="auto", messages=HI["messages"])  # type: ignore[arg-type]

    def test_the_user_rate_limit_answers_429_before_any_key_is_used(
        self, token_gateway: GatewayServer
    ):
        key = new_key(token_gateway, rpm=2)["key"]
        url = token_gateway.base_url
        statuses = [
            httpx.post(f"{url}/api/chat", json=HI, headers=bearer(key)).status_code
            for _ in range(2)
        ]
        assert statuses == [200, 200]
        refused = httpx.post(f"{url}/api/chat", json=HI, headers=bearer(key))
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "user_rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 61  # a request counts 60 to 61 s
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        v1 = httpx.post(f"{url}/v1/chat/completions", json=V1, headers=bearer(key))
        assert v1.status_code == 429
        error = v1.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "user_rate_limited")

    def test_an_exhausted_budget_answers_429_until_utc_midnight(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = start(
            make_fake, make_gateway, AUTH_MODE="token", MODEL_PRICES="fake-small=50000/50000"
        )
        key = new_key(gateway, daily_budget_usd=0.5, rpm=1000)["key"]
        url = gateway.base_url
        spent = []
        refused = None
        for _ in range(20):  # each answer costs (1 + 5 tokens) x $0.05 against $0.50
            answer = httpx.post(f"{url}/api/chat", json=HI, headers=bearer(key))
            if answer.status_code != 200:
                refused = answer
                break
            spent.append(answer.json())
        assert refused is not None, "the budget never ran out"
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "budget_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 86_400
        usage = wait_for(
            lambda: (
                user_entry(gateway, "alice").json()["usage_today"]["requests"] == len(spent)
                and user_entry(gateway, "alice").json()["usage_today"]
            ),
            what="usage written",
        )
        assert usage["total_tokens"] == sum(b["usage"]["total_tokens"] for b in spent)
        assert usage["cost_usd"] == pytest.approx(sum(b["cost_usd"] for b in spent))
        assert usage["cost_usd"] >= 0.5

    async def test_websocket_takes_the_key_from_the_header_or_the_query(
        self, token_gateway: GatewayServer, caplog: pytest.LogCaptureFixture
    ):
        caplog.set_level(logging.INFO)
        caplog.set_level(logging.INFO, logger="uvicorn.error")
        logging.getLogger("uvicorn").addHandler(caplog.handler)  # uvicorn does not propagate
        key = new_key(token_gateway)["key"]
        base = f"ws://127.0.0.1:{token_gateway.port}/api/chat/ws"
        for url, headers in ((base, bearer(key)), (f"{base}?token={key}&user_id=mallory", {})):
            async with connect(url, additional_headers=headers) as ws:
                assert ws.response is not None
                assert ws.response.headers["x-ratelimit-limit-requests"] == "5"
                await ws.send(orjson.dumps({**HI, "id": 1, "user_id": "mallory"}).decode())
                events: list[dict[str, Any]] = []
                while not events or events[-1]["type"] not in ("done", "error"):
                    events.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
                assert events[-1]["type"] == "done"
        assert user_entry(token_gateway, "mallory").status_code == 404
        for url in (base, f"{base}?token=kp-wrong"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url):
                    pass
            assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            async with connect(f"{base}?token={key}x"):
                pass
        logging.getLogger("uvicorn").removeHandler(caplog.handler)
        assert "WebSocket /api/chat/ws" in caplog.text  # the handshakes were logged...
        assert key not in caplog.text  # ...without the key

    def test_a_users_new_tier_applies_to_its_client_key_at_once(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = start(make_fake, make_gateway, AUTH_MODE="token", TIER_RPM="free:2,pro:5")
        url, key = gateway.base_url, new_key(gateway)["key"]
        answers = [httpx.post(f"{url}/api/chat", json=HI, headers=bearer(key)) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        patched = httpx.patch(f"{url}/api/admin/users/alice", json={"tier": "pro"}, headers=AUTH)
        assert patched.status_code == 200, patched.text
        answer = httpx.post(f"{url}/api/chat", json=HI, headers=bearer(key))
        assert answer.status_code == 200
        assert answer.headers["x-ratelimit-limit-requests"] == "5"


class TestTrustedMode:
    def test_the_service_token_names_users_who_get_their_tier_limits(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = start(
            make_fake,
            make_gateway,
            AUTH_MODE="trusted",
            SERVICE_TOKEN=SERVICE,
            TIER_RPM="free:2,pro:5",
        )
        url = gateway.base_url
        as_bob = bearer(SERVICE, **{"X-User-Id": "bob"})
        assert httpx.post(f"{url}/api/chat", json=HI, headers=bearer("wrong")).status_code == 401
        assert httpx.post(f"{url}/api/chat", json=HI, headers=AUTH).status_code == 401
        answers = [httpx.post(f"{url}/api/chat", json=HI, headers=as_bob) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[0].headers["x-ratelimit-limit-requests"] == "2"
        # Another user has a window of its own; the SDK's `user` names it.
        with OpenAI(base_url=f"{url}/v1", api_key=SERVICE, max_retries=0) as sdk:
            for _ in range(2):
                sdk.chat.completions.create(model="auto", messages=HI["messages"], user="carol")  # type: ignore[arg-type]
            with pytest.raises(openai.RateLimitError):
                sdk.chat.completions.create(model="auto", messages=HI["messages"], user="carol")  # type: ignore[arg-type]

        patched = httpx.patch(f"{url}/api/admin/users/bob", json={"tier": "pro"}, headers=AUTH)
        assert patched.status_code == 200, patched.text
        assert patched.json()["tier"] == "pro"
        tokens = sum(a.json()["usage"]["total_tokens"] for a in answers[:2])
        # bob's two answers (no price for fake-small: they cost 0)
        assert patched.json()["usage_today"] == {
            "requests": 2,
            "total_tokens": tokens,
            "cost_usd": 0,
        }
        assert httpx.post(f"{url}/api/chat", json=HI, headers=as_bob).status_code == 200
        bad = httpx.patch(f"{url}/api/admin/users/bob", json={"tier": "gold"}, headers=AUTH)
        assert bad.status_code == 422
        assert bad.json()["error"]["type"] == "invalid_request"

    def test_the_limit_holds_for_the_sum_of_two_instances_on_one_redis(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        with shared_prefix() as prefix:
            fake = make_fake({"k0": {}})
            env = {
                **provider_env("alpha", fake, ["k0"]),
                "AUTH_MODE": "trusted",
                "SERVICE_TOKEN": SERVICE,
                "TIER_RPM": "free:4",
                "REDIS_URL": SHARED_URL,
                "KEYPOOL_REDIS_PREFIX": prefix,
            }
            gateways = [make_gateway(env), make_gateway(env)]
            as_dan = bearer(SERVICE, **{"X-User-Id": "dan"})
            statuses = [
                httpx.post(f"{gw.base_url}/api/chat", json=HI, headers=as_dan).status_code
                for _ in range(3)
                for gw in gateways
            ]
            assert sorted(statuses) == [200] * 4 + [429] * 2


class TestNoneMode:
    def test_nothing_changes_and_no_user_is_limited(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = start(make_fake, make_gateway, TIER_RPM="free:1")
        answers = [
            httpx.post(f"{gateway.base_url}/api/chat", json=HI, headers={"X-User-Id": "eve"})
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert "x-ratelimit-limit-requests" not in answers[0].headers


class TestCors:
    def test_preflights_from_listed_origins_only(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = start(
            make_fake, make_gateway, AUTH_MODE="token", CORS_ORIGINS="https://app.example"
        )
        ask = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-user-id",
        }
        for path in ("/api/chat", "/v1/chat/completions"):
            allowed = httpx.options(
                gateway.base_url + path, headers={"Origin": "https://app.example", **ask}
            )
            assert allowed.status_code in (200, 204)
            assert allowed.headers["access-control-allow-origin"] == "https://app.example"
            allowed_headers = allowed.headers["access-control-allow-headers"].lower()
            for name in ("authorization", "content-type", "x-user-id", "x-request-id"):
                assert name in allowed_headers
            refused = httpx.options(
                gateway.base_url + path, headers={"Origin": "https://evil.example", **ask}
            )
            assert "access-control-allow-origin" not in refused.headers

        key = new_key(gateway)["key"]
        answer = httpx.post(
            f"{gateway.base_url}/api/chat",
            json=HI,
            headers=bearer(key, Origin="https://app.example"),
        )
        exposed = answer.headers["access-control-expose-headers"].lower()
        assert "x-keypool-provider" in exposed
        assert "x-ratelimit-remaining-requests" in exposed


def test_client_keys_and_the_service_token_never_reach_logs_or_answers(
    make_fake: FakeFactory, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    gateway = start(make_fake, make_gateway, AUTH_MODE="token")
    created = new_key(gateway)
    url = gateway.base_url
    bodies = [
        httpx.post(f"{url}/api/chat", json=HI, headers=bearer(created["key"])),
        httpx.post(f"{url}/api/chat", json=HI, headers=bearer(created["key"] + "x")),
        httpx.get(f"{url}/api/admin/clients", headers=AUTH),
        httpx.delete(f"{url}/api/admin/clients/{created['id']}", headers=AUTH),
        httpx.post(f"{url}/api/chat", json=HI, headers=bearer(created["key"])),
    ]
    trusted = start(make_fake, make_gateway, AUTH_MODE="trusted", SERVICE_TOKEN=SERVICE)
    bodies.append(httpx.post(f"{trusted.base_url}/api/chat", json=HI, headers=bearer(SERVICE)))
    bodies.append(
        httpx.post(f"{trusted.base_url}/api/chat", json=HI, headers=bearer(SERVICE + "x"))
    )
    for secret in (created["key"], SERVICE):
        assert all(secret not in r.text and secret not in str(r.headers) for r in bodies)
        assert secret not in caplog.text
    assert created["key_prefix"] in caplog.text  # logged by prefix only


def test_none_mode_on_a_public_host_warns_once_at_start(
    make_fake: FakeFactory, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="keypool.access")
    start(make_fake, make_gateway, HOST="0.0.0.0")
    assert sum("AUTH_MODE=none on 0.0.0.0" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    start(make_fake, make_gateway, AUTH_MODE="token", HOST="0.0.0.0")
    assert "AUTH_MODE=none" not in caplog.text
