"""DATABASE_URL accepts what users paste; anything unusable is one clear line at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ConfigError, load_settings

KEYS = {"GROQ_API_KEYS": "gsk-0123456789abcdef"}


@pytest.mark.parametrize(
    ("pasted", "used"),
    [
        ("postgres://u:pw@db:5432/app", "postgresql+asyncpg://u:pw@db:5432/app"),
        ("postgresql://u:pw@db/app", "postgresql+asyncpg://u:pw@db/app"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite+aiosqlite://", "sqlite+aiosqlite://"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("sqlite+aiosqlite:///./keypool.db", "sqlite+aiosqlite:///./keypool.db"),
    ],
)
def test_pasted_urls_get_the_async_driver(pasted: str, used: str) -> None:
    assert load_settings({**KEYS, "DATABASE_URL": pasted}).database_url == used


@pytest.mark.parametrize(
    "bad", ["mysql://u:hunter2@db/app", "notaurl", "postgresql://u:hunter2@db:abc/app"]
)
def test_an_unusable_url_is_one_line_without_the_password(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**KEYS, "DATABASE_URL": bad})
    assert "DATABASE_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_serve_with_an_unusable_url_exits_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, **KEYS, "DATABASE_URL": "mysql://u:hunter2@db/app"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line] == [
        line for line in done.stderr.splitlines() if "DATABASE_URL" in line
    ]
