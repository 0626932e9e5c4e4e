"""Cost per answer over real HTTP: figures, where they are stored, budgets spent for real."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from app.access.service import build_access
from app.db.access import DailyUsage, DailyUsageRepository
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.databases import DB_KINDS, _read, run_coro, stats_rows, throwaway_database
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import post_stream, wait_for

ADMIN = f"admin-{secrets.token_hex(12)}"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
HI = {"messages": [{"role": "user", "content": "hello there, what is new"}]}
PRICES = "fake-small=1000/2000"  # USD per 1M prompt / completion tokens


def expected_cost(usage: dict[str, Any]) -> float:
    return float(usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1_000_000


def start(make_fake: FakeFactory, make_gateway: GatewayFactory, **env: str) -> GatewayServer:
    fake = make_fake({"k0": {}, "k1": {}})
    return make_gateway(
        {
            **provider_env("alpha", fake, ["k0", "k1"]),
            "ADMIN_TOKEN": ADMIN,
            "MODEL_PRICES": PRICES,
            "STATS_FLUSH_INTERVAL_S": "0.05",
            **env,
        }
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestCostInAnswers:
    def test_body_headers_and_done_events_carry_the_priced_usage(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        url = start(make_fake, make_gateway).base_url
        answer = httpx.post(f"{url}/api/chat", json=HI, headers={"X-User-Id": "ann"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        cost = expected_cost(body["usage"])
        assert cost > 0
        assert body["cost_usd"] == pytest.approx(cost)
        assert float(answer.headers["x-keypool-cost-usd"]) == pytest.approx(cost)
        assert "e" not in answer.headers["x-keypool-cost-usd"]  # plain decimal

        v1 = httpx.post(f"{url}/v1/chat/completions", json={"model": "auto", **HI, "user": "ann"})
        assert v1.status_code == 200, v1.text
        assert float(v1.headers["x-keypool-cost-usd"]) == pytest.approx(
            expected_cost(v1.json()["usage"])
        )
        assert "cost_usd" not in v1.json()  # OpenAI's body stays OpenAI's

        _, events = post_stream(f"{url}/api/chat/stream", HI)
        done = events[-1]
        assert done["type"] == "done"
        assert done["cost_usd"] == pytest.approx(expected_cost(done["usage"]))

    async def test_the_websocket_done_event_carries_the_cost(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = start(make_fake, make_gateway)
        async with connect(f"ws://127.0.0.1:{gateway.port}/api/chat/ws") as ws:
            await ws.send(orjson.dumps({**HI, "id": "a"}).decode())
            events = await frames_until_end(ws)
        assert events[-1]["type"] == "done"
        assert events[-1]["cost_usd"] == pytest.approx(expected_cost(events[-1]["usage"]))


async def frames_until_end(ws: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in ("done", "error"):
        events.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
    return events


@pytest.fixture(params=DB_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with throwaway_database(request.param, tmp_path) as url:
        yield url


def daily_usage(url: str, user: str) -> DailyUsage | None:
    day = datetime.now(UTC).date()

    async def read(session: Any) -> DailyUsage | None:
        return (await DailyUsageRepository(session).of_day(day, [user])).get(user)

    return run_coro(_read(url, read))


def test_spend_is_stored_per_user_and_per_key(
    make_fake: FakeFactory, make_gateway: GatewayFactory, database: str
):
    """none mode: nobody is limited, but every user's usage and every key's cost is kept."""
    url = start(make_fake, make_gateway, DATABASE_URL=database).base_url
    bodies = []
    for _ in range(3):
        answer = httpx.post(f"{url}/api/chat", json=HI, headers={"X-User-Id": "ann"})
        assert answer.status_code == 200, answer.text
        bodies.append(answer.json())
    anonymous = httpx.post(f"{url}/api/chat", json=HI).json()  # priced, no user row
    total = sum(b["cost_usd"] for b in bodies)

    def written() -> DailyUsage | None:
        row = daily_usage(database, "ann")
        return row if row is not None and row.requests == 3 else None

    row = wait_for(written, what="user_daily_usage row")
    assert row.prompt_tokens == sum(b["usage"]["prompt_tokens"] for b in bodies)
    assert row.completion_tokens == sum(b["usage"]["completion_tokens"] for b in bodies)
    assert row.cost_usd == pytest.approx(total)

    everything = total + anonymous["cost_usd"]
    wait_for(
        lambda: sum(r["total_requests"] for r in stats_rows(database)) == 4,
        what="api_key_stats flushed",
    )
    assert sum(r["cost_usd"] for r in stats_rows(database)) == pytest.approx(everything)


class Clock:
    """The access layer's clock, moved by the test (budgets renew at UTC midnight)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def test_a_budget_spent_for_real_refuses_until_the_next_utc_day(
    make_fake: FakeFactory,
    make_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    clock = Clock()
    monkeypatch.setattr("app.runtime.build_access", functools.partial(build_access, clock=clock))
    caplog.set_level(logging.WARNING, logger="keypool.access")
    gateway = start(make_fake, make_gateway, AUTH_MODE="token", MODEL_PRICES="fake-small=5e4/5e4")
    created = httpx.post(
        f"{gateway.base_url}/api/admin/clients",
        json={"user_id": "carol", "daily_budget_usd": 2, "rpm": 1000},
        headers=AUTH,
    )
    key = created.json()["key"]
    url = gateway.base_url

    spent: list[float] = []
    refused = None
    for _ in range(40):
        answer = httpx.post(f"{url}/api/chat", json=HI, headers=bearer(key))
        if answer.status_code != 200:
            refused = answer
            break
        spent.append(answer.json()["cost_usd"])
    assert refused is not None, "the budget never ran out"
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "budget_exceeded"
    assert sum(spent) >= 2 > sum(spent[:-1])  # refused right after the budget was reached
    midnight = datetime.fromtimestamp(clock.now, UTC).date() + timedelta(days=1)
    to_midnight = datetime.combine(midnight, datetime.min.time(), UTC).timestamp() - clock.now
    assert int(refused.headers["retry-after"]) == pytest.approx(to_midnight, abs=2)
    # One warning at 80%, one alert when the budget was reached: never repeated.
    assert httpx.post(f"{url}/api/chat", json=HI, headers=bearer(key)).status_code == 429
    warnings = [r.getMessage() for r in caplog.records if "budget_warning" in r.getMessage()]
    reached = [r.getMessage() for r in caplog.records if "budget_exceeded:" in r.getMessage()]
    assert len(warnings) == 1
    assert "'carol'" in warnings[0]
    assert len(reached) == 1

    clock.now = datetime.combine(midnight, datetime.min.time(), UTC).timestamp() + 1
    renewed = httpx.post(f"{url}/api/chat", json=HI, headers=bearer(key))
    assert renewed.status_code == 200, renewed.text


class TestWebsocketFrames:
    async def test_each_frame_counts_against_the_user_limit_and_the_socket_stays_open(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = start(make_fake, make_gateway, AUTH_MODE="token")
        created = httpx.post(
            f"{gateway.base_url}/api/admin/clients",
            json={"user_id": "dan", "rpm": 2},
            headers=AUTH,
        ).json()
        async with connect(
            f"ws://127.0.0.1:{gateway.port}/api/chat/ws", additional_headers=bearer(created["key"])
        ) as ws:
            outcomes = []
            for frame in (1, 2, 3, 4):
                await ws.send(orjson.dumps({**HI, "id": frame}).decode())
                outcomes.append((await frames_until_end(ws))[-1])
        assert [e["type"] for e in outcomes] == ["done", "done", "error", "error"]
        refused = outcomes[2]
        assert (refused["id"], refused["status"]) == (3, 429)
        assert refused["error"]["type"] == "user_rate_limited"
        assert refused["error"]["retry_after"] >= 1
        assert outcomes[3]["id"] == 4  # still open, still answering
