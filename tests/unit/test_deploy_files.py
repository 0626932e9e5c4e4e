"""The container build and compose file: no secrets in the context, one address for clients."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]


def ignored(path: str) -> bool:
    """Good enough for our patterns: last matching line wins, `!` re-includes."""
    result = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if any(
            fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, f"**/{pattern}")
            for candidate in (path, path.split("/")[0])
        ):
            result = not negate
    return result


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    for path in (".env", ".venv", ".venv/bin/python", "keypool.db", ".git", "tests"):
        assert ignored(path), path
    for path in ("app", "migrations", "pyproject.toml", "constraints.txt", "alembic.ini"):
        assert not ignored(path), path


def test_compose_publishes_one_address_through_the_proxy() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published == {"proxy": ["8000:8000"]}
    # Client keys by default (AUTH_MODE from the caller's environment may override it).
    assert services["app"]["environment"]["AUTH_MODE"] == "${AUTH_MODE:-token}"
    mounted = services["proxy"]["volumes"][0].split(":")[0]
    config = (ROOT / mounted).read_text()
    assert "server app:8000" in config
    assert "proxy_buffering off" in config  # SSE events must not wait in a buffer
    assert "$http_upgrade" in config  # websockets pass through
