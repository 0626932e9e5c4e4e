"""Prometheus metrics: upstream attempts counted as they settle, pool state read at scrape time."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from app.chat.usage import UsageSink
from app.config import ProviderConfig
from app.db.stats_writer import UsageEvent
from app.keys.model import KeyState
from app.state.base import KeyStateStore

_STATES = tuple(state.value for state in KeyState)
_CIRCUITS = ("closed", "open", "half_open")
_NOT_OK = {"bad_request": "rejected", "not_found": "rejected", "cancelled": "cancelled"}


class Metrics:
    """One registry per app, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "keypool_upstream_attempts",
            "Upstream attempts by provider and result (ok, error, rate_limited, rejected, cancelled).",
            ["provider", "result"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "keypool_tokens",
            "Tokens served by provider and kind (prompt, completion).",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.key_state = Gauge(
            "keypool_key_state",
            "1 for each key's current state (active, rate_limited, failed, disabled).",
            ["provider", "key_index", "state"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "keypool_key_in_flight",
            "Requests in flight per key.",
            ["provider", "key_index"],
            registry=self.registry,
        )
        self.circuit = Gauge(
            "keypool_circuit_state",
            "1 for each provider's breaker state.",
            ["provider", "state"],
            registry=self.registry,
        )

    def observe(self, event: UsageEvent) -> None:
        result = "rate_limited" if event.rate_limited else "error" if event.error else "ok"
        if result == "ok" and event.outcome in _NOT_OK:
            result = _NOT_OK[event.outcome]  # an upstream 400/404 is an answer, not a success
        self.attempts.labels(event.provider, result).inc()
        if event.prompt_tokens:
            self.tokens.labels(event.provider, "prompt").inc(event.prompt_tokens)
        if event.completion_tokens:
            self.tokens.labels(event.provider, "completion").inc(event.completion_tokens)

    async def render(self, providers: tuple[ProviderConfig, ...], store: KeyStateStore) -> bytes:
        """Refresh the pool gauges from the state store, then serialise everything."""
        now = time.time()
        for provider in providers:
            snap = await store.snapshot(provider.name, now)
            for index, status in enumerate(snap.keys):
                current = status.effective_state(now).value
                for state in _STATES:
                    self.key_state.labels(provider.name, str(index), state).set(state == current)
                self.in_flight.labels(provider.name, str(index)).set(status.in_flight)
            for state in _CIRCUITS:
                self.circuit.labels(provider.name, state).set(state == snap.circuit.value)
        return generate_latest(self.registry)


class MeteredSink:
    """Counts each settled attempt, then hands it to the stats writer; O(1), no I/O."""

    def __init__(self, inner: UsageSink, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def record(self, event: UsageEvent) -> None:
        self.metrics.observe(event)
        self.inner.record(event)
