"""api_key_stats over real HTTP: mixed traffic adds up exactly, and shutdown loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.databases import DB_KINDS, stats_rows, throwaway_database, user_groups
from tests.support.servers import GatewayServer, provider_env
from tests.support.traffic import post_all
from tests.support.usage import (
    COUNTERS,
    expected_rows,
    fake_counts,
    per_key,
    settled_stats,
    stored_rows,
)

TOKEN = "usage-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USERS = ["ann", "bob", "cy", "dee", "eve", None]  # every sixth request has no user
ALPHA = {
    "sk-alpha-ok-00000000000": {},
    "sk-alpha-500-0000000000": {"mode": "error_500"},
    "sk-alpha-429-0000000000": {"mode": "rate_limited", "retry_after_s": 0.05},
    "sk-alpha-401-0000000000": {"mode": "unauthorized"},
    "sk-alpha-ok-11111111111": {},
}
BETA = {
    "sk-beta-ok-000000000000": {},
    "sk-beta-429-00000000000": {"mode": "rate_limited", "retry_after_s": 0.05},
    "sk-beta-ok-222222222222": {},
}
ROUTES: list[dict[str, Any]] = [{}, {"model": "alpha/fake-small"}, {}, {"model": "beta/fake-small"}]


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with throwaway_database(request.param, tmp_path) as url:
        yield url


class Setup:
    def __init__(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, url: str, **env: str
    ) -> None:
        self.alpha: FakeProviderThread = make_fake(ALPHA)
        self.beta: FakeProviderThread = make_fake(BETA)
        self.gateway: GatewayServer = make_gateway(
            {
                **provider_env("alpha", self.alpha, list(ALPHA)),
                **provider_env("beta", self.beta, list(BETA)),
                "DATABASE_URL": url,
                "ADMIN_TOKEN": TOKEN,
                **env,
            }
        )

    def request(self, i: int) -> tuple[str | None, dict[str, Any]]:
        """The i-th request of the mix: its user, and its body (Path A or B, varied sizes)."""
        content = " ".join(["word"] * (1 + i % 7))
        return USERS[i % len(USERS)], {
            "messages": [{"role": "user", "content": content}],
            **ROUTES[i % len(ROUTES)],
        }

    async def send(self, n: int) -> list[tuple[str | None, dict[str, Any]]]:
        mix = [self.request(i) for i in range(n)]
        requests = [({"X-User-Id": user} if user else {}, body) for user, body in mix]
        answers = await post_all(self.gateway.base_url, "/api/chat", requests)
        assert [status for status, _ in answers] == [200] * n, answers
        return [(user, body) for (user, _), (_, body) in zip(mix, answers, strict=True)]

    def groups(self) -> dict[str, int]:
        found = {}
        with httpx.Client(base_url=self.gateway.base_url, headers=AUTH) as client:
            for user in filter(None, USERS):
                answer = client.get(f"/api/admin/users/{user}")
                assert answer.status_code == 200, answer.text
                found[user] = answer.json()["api_key_group"]
        return found

    def expected(self, sent: list[tuple[str | None, dict[str, Any]]]) -> dict[Any, Any]:
        groups = self.groups()
        return expected_rows((groups[u] if u else None, body) for u, body in sent)

    def fake_view(self) -> dict[tuple[str, int], dict[str, int]]:
        return fake_counts("alpha", self.alpha, list(ALPHA)) | fake_counts(
            "beta", self.beta, list(BETA)
        )


def only(counters: dict[str, int], names: tuple[str, ...]) -> dict[str, int]:
    return {name: counters[name] for name in names}


async def test_a_thousand_mixed_requests_add_up_to_the_providers_own_counts(
    db_url: str, make_fake: FakeFactory, make_gateway: GatewayFactory
):
    setup = Setup(make_fake, make_gateway, db_url, STATS_FLUSH_INTERVAL_S="0.05")
    sent = await setup.send(1000)
    expected = setup.expected(sent)
    stored = await asyncio.to_thread(settled_stats, db_url, expected)
    rows = stored_rows(stored)

    # The gateway's per-key sums are exactly what the fake provider itself counted.
    fake = setup.fake_view()
    names = ("total_requests", "errors", "rate_limited")
    assert {key: only(tally, names) for key, tally in per_key(rows).items()} == {
        key: counts for key, counts in fake.items() if counts["total_requests"]
    }
    assert sum(c["total_requests"] for c in fake.values()) == sum(
        1 + len(body["attempts"]) for _, body in sent
    )
    # The mix really was mixed: every kind of failure happened.
    assert all(fake[key]["errors"] for key in [("alpha", 1), ("alpha", 3)])  # 500, 401
    assert all(fake[key]["rate_limited"] for key in [("alpha", 2), ("beta", 1)])
    assert sum(r["total_tokens"] for r in stored) == sum(
        b["usage"]["total_tokens"] for _, b in sent
    )

    # Requests without a user are stored under the NULL group, and only there.
    anonymous = sum(1 + len(b["attempts"]) for u, b in sent if u is None)
    assert sum(r["total_requests"] for r in stored if r["key_group"] is None) == anonymous
    assert {r["key_group"] for r in stored} == {None, *setup.groups().values()}
    assert all(
        r["key_fingerprint"].startswith(f"{r['provider']}:{r['key_index']}:") for r in stored
    )

    health = httpx.get(f"{setup.gateway.base_url}/api/admin/api-keys/health", headers=AUTH).json()
    for row in health["keyGroupStats"]:
        mine = [r for r in stored if r["key_group"] == row["key_group"]]
        assert row["total_requests"] == sum(r["total_requests"] for r in mine)
        assert row["total_tokens"] == sum(r["total_tokens"] for r in mine)
        assert row["user_count"] == 1  # five users, five groups, least-loaded first


async def test_stopping_the_gateway_writes_everything_still_in_memory(
    db_url: str, make_fake: FakeFactory, make_gateway: GatewayFactory
):
    setup = Setup(make_fake, make_gateway, db_url, STATS_FLUSH_INTERVAL_S="3600")
    sent = await setup.send(120)
    expected = setup.expected(sent)
    assert stats_rows(db_url) == []  # nothing flushed yet: the interval is an hour

    setup.gateway.stop()
    stored = stats_rows(db_url)
    assert stored_rows(stored) == expected
    assert set(user_groups(db_url)) == set(filter(None, USERS))
    assert all(r["last_request_at"] is not None for r in stored)
    assert {name: sum(r[name] for r in stored) for name in COUNTERS}["total_requests"] == sum(
        1 + len(b["attempts"]) for _, b in sent
    )
