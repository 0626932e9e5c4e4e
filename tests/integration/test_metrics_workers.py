"""/metrics with several uvicorn workers: every scrape shows the sum over all workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import FakeFactory
from tests.support.redis_server import free_port
from tests.support.servers import provider_env
from tests.support.streams import wait_for

KEYS = ["mp-key-000000000000", "mp-key-111111111111"]
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _total(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    lines = [s for s in text.splitlines() if s.startswith("keypool_requests_total{")]
    return sum(float(line.split()[-1]) for line in lines)


@pytest.mark.long(10)
def test_two_workers_answer_one_total(make_fake: FakeFactory, tmp_path: Path):
    fake = make_fake({key: {} for key in KEYS})
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        **provider_env("alpha", fake, KEYS),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'workers.db'}",
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--workers", "2", "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 30, "two workers up")
        for _ in range(30):  # a new connection each time, so both workers take requests
            assert httpx.post(f"{url}/api/chat", json=HELLO).status_code == 200
        # The worker that answers a scrape empties its own batch first; the other worker's
        # records land within its 100 ms batch interval. Once all 30 are there, every scrape,
        # whichever worker answers it, reports exactly 30: nothing counted twice, nothing lost.
        wait_for(lambda: _total(url) == 30, 5, "all 30 answers counted")
        for _ in range(4):
            assert _total(url) == 30
    finally:
        server.terminate()
        server.wait(20)
