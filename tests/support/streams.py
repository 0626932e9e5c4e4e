"""Helpers for streaming tests: SSE event reading, bounded polling, gateway health look-ups."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpx
import orjson

T = TypeVar("T")
ADMIN_TOKEN = "streams-admin-token"
HELLO = {"messages": [{"role": "user", "content": "hello there"}]}


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The `data:` payloads of an SSE body, in order."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


def post_stream(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """POST and read the whole answer; for a stream, its events; for JSON, no events."""
    with httpx.stream("POST", url, json=body, headers=headers, timeout=20) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response, [orjson.loads(d) for d in sse_data(response.iter_lines())]
        response.read()
        return response, []


def wait_for(probe: Callable[[], T | None], timeout: float = 5.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy (and return that), with a bounded deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"{what} not reached within {timeout}s (last: {value!r})"
        )
        time.sleep(0.01)


def key_health(base_url: str, provider: str) -> list[dict[str, Any]]:
    """The `providers[].keys[]` entries of one provider from the admin health endpoint."""
    response = httpx.get(
        f"{base_url}/api/admin/api-keys/health",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    for entry in response.json()["providers"]:
        if entry["name"] == provider:
            keys: list[dict[str, Any]] = entry["keys"]
            return keys
    raise AssertionError(f"provider {provider!r} not in health")


def upstream_idle(stats: dict[str, Any]) -> bool:
    """No stream, request or connection left open at the fake provider."""
    keys_busy = any(k["in_flight"] or k["streams_open"] for k in stats["keys"].values())
    return stats["streams_open"] == 0 and stats["open_connections"] == 0 and not keys_busy
