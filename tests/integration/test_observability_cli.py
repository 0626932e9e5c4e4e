"""`keypool keys check` and `keypool stats` against the fake provider and a real gateway."""

from __future__ import annotations

import httpx
import pytest

from app.cli import main
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.databases import stats_rows
from tests.support.servers import provider_env
from tests.support.streams import wait_for

KEYS = ["cli-key-0000000000", "cli-key-1111111111", "cli-bad-2222222222"]
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def test_keys_check_probes_every_key_and_prints_a_table(
    make_fake: FakeFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    fake = make_fake({KEYS[0]: {}, KEYS[1]: {}, KEYS[2]: {"mode": "unauthorized"}})
    for name, value in provider_env("alpha", fake, KEYS).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "160")
    status = main(["keys", "check"])
    out = capsys.readouterr().out
    assert status == 1  # one key does not answer 2xx
    lines = {line.split("│")[3].strip(): line for line in out.splitlines() if line.count("│") > 6}
    assert set(lines) == {"alpha:0:0000", "alpha:1:1111", "alpha:2:2222"}
    assert "active" in lines["alpha:0:0000"]
    assert "200" in lines["alpha:0:0000"]
    assert "failed" in lines["alpha:2:2222"]
    assert "401" in lines["alpha:2:2222"]
    assert "2/3 keys answered" in out
    assert all(key not in out for key in KEYS)


def test_stats_prints_the_live_summary_and_database_totals(
    make_fake: FakeFactory,
    make_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    fake = make_fake({KEYS[0]: {}, KEYS[1]: {}})
    gateway = make_gateway({**provider_env("alpha", fake, KEYS[:2]), "ADMIN_TOKEN": "cli-admin"})
    with httpx.Client(base_url=gateway.base_url) as client:
        for _ in range(4):
            assert client.post("/api/chat", json=HELLO).status_code == 200
    database_url = gateway.settings.database_url
    wait_for(lambda: sum(r["total_requests"] for r in stats_rows(database_url)) == 4, 10)
    monkeypatch.setenv("ADMIN_TOKEN", "cli-admin")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["stats", "--url", gateway.base_url, "--window", "5m"]) == 0
    out = capsys.readouterr().out
    assert "gateway, last 5m" in out
    requests_row = next(line for line in out.splitlines() if "│ requests" in line)
    assert requests_row.split("│")[2].strip() == "4"
    totals = [line for line in out.splitlines() if "alpha:" in line]
    assert len(totals) == 2
    assert all(line.split("│")[4].strip() == "2" for line in totals)


def test_stats_without_a_gateway_still_reads_the_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
):
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["stats", "--url", "http://127.0.0.1:9"]) == 1
    assert "gateway not reachable" in capsys.readouterr().out
