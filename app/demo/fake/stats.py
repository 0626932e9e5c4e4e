"""Counters and gauges of the fake provider, as served by `GET /_control/stats`."""

from __future__ import annotations

from collections import Counter
from typing import Any


class KeyCounters:
    """Per-key figures. `requests`/`ok`/`status` count chat completions only; probes of
    `/v1/models` go to `models_requests` so they don't pollute them."""

    __slots__ = (
        "dropped",
        "in_flight",
        "models_requests",
        "ok",
        "requests",
        "status",
        "streams_open",
    )

    def __init__(self) -> None:
        self.in_flight = 0
        self.streams_open = 0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; gauges (in_flight, streams_open) describe live work and stay."""
        self.requests = 0
        self.ok = 0
        self.models_requests = 0
        self.dropped = 0
        self.status: Counter[str] = Counter()

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "status": dict(self.status),
            "models_requests": self.models_requests,
            "dropped": self.dropped,
            "streams_open": self.streams_open,
            "in_flight": self.in_flight,
        }


class ProviderStats:
    """All keys' counters plus provider-wide totals (unknown keys are only counted in totals)."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyCounters] = {}
        self.in_flight = 0
        self.streams_open = 0
        self.reset()

    def reset(self) -> None:
        self.total_requests = 0
        self.total_models_requests = 0
        self.unknown_key_requests = 0
        for counters in self.keys.values():
            counters.reset()

    def for_key(self, key: str) -> KeyCounters:
        counters = self.keys.get(key)
        if counters is None:
            counters = self.keys[key] = KeyCounters()
        return counters

    def snapshot(self, open_connections: int) -> dict[str, Any]:
        return {
            "keys": {key: counters.snapshot() for key, counters in self.keys.items()},
            "open_connections": open_connections,
            "streams_open": self.streams_open,
            "in_flight": self.in_flight,
            "total_requests": self.total_requests,
            "total_models_requests": self.total_models_requests,
            "unknown_key_requests": self.unknown_key_requests,
        }
