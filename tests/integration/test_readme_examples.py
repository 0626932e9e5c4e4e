"""The README's curl examples and the demo banner's work, as printed, against the demo setup."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.demo.fake_provider import FakeProviderThread, demo_config
from app.demo.runner import DEMO_ADMIN_TOKEN, banner, demo_environment
from tests.conftest import GatewayFactory
from tests.support.servers import GatewayServer

README = Path(__file__).resolve().parents[2] / "README.md"


def commands(text: str) -> list[str]:
    """Shell lines with their `\\` continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [re.split(r"\s{2,}#", line)[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def readme_examples() -> list[str]:
    section = README.read_text().split("## API examples", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return commands(block)


@pytest.fixture
def demo(make_gateway: GatewayFactory) -> Iterator[GatewayServer]:
    with FakeProviderThread(demo_config()) as fake:
        env = {**demo_environment(fake.base_url), "ADMIN_TOKEN": DEMO_ADMIN_TOKEN}
        yield make_gateway(env)


def run_all(lines: list[str], gateway: GatewayServer, target: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ADMIN_TOKEN"}  # as on a fresh shell
    setup = [line for line in lines if not line.startswith("curl ")]
    curls = [
        line.replace(target, f"127.0.0.1:{gateway.port}")
        for line in lines
        if line.startswith("curl ")
    ]
    assert curls
    for curl in curls:
        script = "\n".join([*setup, f"{curl} --max-time 20 -o /dev/null -w '%{{http_code}}'"])
        done = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, (curl, done.stderr)
        assert done.stdout.startswith("2"), (curl, done.stdout)


def test_every_readme_curl_example_succeeds_against_the_demo(demo: GatewayServer) -> None:
    lines = readme_examples()
    assert any("api/admin" in line for line in lines)
    run_all(lines, demo, "localhost:8000")


def test_every_demo_banner_curl_succeeds(demo: GatewayServer) -> None:
    lines = commands(banner("127.0.0.1", 8000, DEMO_ADMIN_TOKEN))
    run_all([line for line in lines if line.startswith("curl ")], demo, "127.0.0.1:8000")
