"""Prometheus metrics: upstream attempts counted as they settle, pool state read at scrape time."""

from __future__ import annotations

import os
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from app.config import ProviderConfig
from app.keys.model import KeyState
from app.state.base import KeyStateStore
from app.usage import UsageEvent, UsageSink

_STATES = tuple(state.value for state in KeyState)
_CIRCUITS = ("closed", "open", "half_open")
_NOT_OK = {"bad_request": "rejected", "not_found": "rejected", "cancelled": "cancelled"}
# Seconds; chat answers run from milliseconds (cache, fake) to minutes (long completions).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# No `*_created` series (when each counter and histogram was first recorded, an OpenMetrics
# extra Prometheus does not need to compute rates): a fifth of every scrape's lines and of its
# rendering time. A prometheus-client setting for the whole process.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """One registry per app, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "keypool_upstream_attempts",
            "Upstream attempts by provider, key (its fingerprint, or byok: a user's own key) and "
            "result (ok, error, rate_limited, rejected, cancelled).",
            ["provider", "key", "result"],
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
            ["provider", "key_index", "key", "state"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.in_flight = Gauge(
            "keypool_key_in_flight",
            "Requests in flight per key.",
            ["provider", "key_index"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.circuit = Gauge(
            "keypool_circuit_state",
            "1 for each provider's breaker state.",
            ["provider", "state"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self._add_request_families()
        self._children: dict[tuple[object, ...], Any] = {}
        self.tallies = Tallies()

    def fold(self) -> None:
        """Hand every value what was recorded since the last fold (readers call this before they
        read; with several workers the observability batch also calls it after each batch)."""
        self.tallies.fold()

    def _add_request_families(self) -> None:
        registry = self.registry
        self.requests = Counter(
            "keypool_requests",
            "Chat requests answered, by route, path (A/B), provider and HTTP status.",
            ["route", "path", "provider", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "keypool_request_duration_seconds",
            "Time to answer a chat request (to the last byte), by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "keypool_upstream_duration_seconds",
            "Time of one upstream attempt, by provider.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "keypool_time_to_first_token_seconds",
            "Time from a streamed request to its first token, by provider.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cost = Counter(
            "keypool_cost_usd",
            "Cost of answered requests in USD, by provider.",
            ["provider"],
            registry=registry,
        )
        self.cache = Counter(
            "keypool_cache_requests",
            "Response cache lookups by result (hit, miss, bypass).",
            ["result"],
            registry=registry,
        )
        self.user_rejections = Counter(
            "keypool_user_rejections",
            "Requests refused before any key was used, by reason (e.g. user_rate_limited).",
            ["reason"],
            registry=registry,
        )
        self.alerts = Counter(
            "keypool_alerts", "Alerts emitted, by type.", ["type"], registry=registry
        )

    # Recording: label children are cached in one dict, so a call is a lookup and an add
    # (into the child's cell, folded into prometheus-client later: see `_cell` and `Tallies`).

    def observe_request(
        self,
        route: str,
        path: str,
        provider: str,
        status: int,
        seconds: float,
        cache: str | None = None,
    ) -> None:
        """One answered chat request; `cache` is its cache result (hit, miss, bypass) if any."""
        key = ("req", route, path, provider, status, cache)
        cells = self._children.get(key)
        if cells is None:
            cells = (
                self._fast(self.requests.labels(route, path, provider, str(status))),
                self._fast(self.request_duration.labels(route)),
                self._child(self.cache, cache) if cache else None,
            )
            self._children[key] = cells
        counter, histogram, cached = cells
        counter.inc(1)
        histogram.observe(seconds)
        if cached is not None:
            cached.inc(1)

    def _child(self, family: Counter | Histogram, *labels: str) -> Any:
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._fast(family.labels(*labels))
        return child

    def observe_ttft(self, provider: str, seconds: float) -> None:
        self._child(self.ttft, provider).observe(seconds)

    def add_cost(self, provider: str, usd: float) -> None:
        if usd > 0:
            self._child(self.cost, provider).inc(usd)

    def count_rejection(self, reason: str) -> None:
        self._child(self.user_rejections, reason).inc(1)

    def count_alert(self, kind: str) -> None:
        self._child(self.alerts, kind).inc(1)

    def observe(self, event: UsageEvent) -> None:
        result = "rate_limited" if event.rate_limited else "error" if event.error else "ok"
        if result == "ok" and event.outcome in _NOT_OK:
            result = _NOT_OK[event.outcome]  # an upstream 400/404 is an answer, not a success
        key = ("attempt", event.provider, event.key_label, result)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._child(self.attempts, event.provider, event.key_label, result),
                self._child(self.tokens, event.provider, "prompt"),
                self._child(self.tokens, event.provider, "completion"),
                self._child(self.upstream_duration, event.provider),
            )
        attempts, prompt, completion, duration = children
        attempts.inc(1)
        if event.seconds is not None:
            duration.observe(event.seconds)
        if event.prompt_tokens:
            prompt.inc(event.prompt_tokens)
        if event.completion_tokens:
            completion.inc(event.completion_tokens)

    def _fast(self, child: Any) -> Any:
        return _cell(child, self.tallies)

    async def render(self, providers: tuple[ProviderConfig, ...], store: KeyStateStore) -> bytes:
        """Refresh the pool gauges from the state store, then serialise everything."""
        self.fold()
        now = time.time()
        for provider in providers:
            snap = await store.snapshot(provider.name, now)
            for index, status in enumerate(snap.keys):
                current = status.effective_state(now).value
                fingerprint = provider.keys[index].fingerprint
                for state in _STATES:
                    child = self.key_state.labels(provider.name, str(index), fingerprint, state)
                    child.set(state == current)
                self.in_flight.labels(provider.name, str(index)).set(status.in_flight)
            for state in _CIRCUITS:
                self.circuit.labels(provider.name, state).set(state == snap.circuit.value)
        return generate_latest(self.registry if not multiprocess_dir() else _merged_registry())


class Tallies:
    """The cells recorded into since the last fold, each listed once, on its first record.

    A prometheus-client value's own `inc` takes a lock each time (0.33 us on the bench host,
    seven times per chat request); a cell adds to plain attributes, and `fold` hands each value
    its sum once per read (`Metrics.fold`). Everything runs on the event loop's thread."""

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells: list[_Count | _Observed] = []

    def fold(self) -> None:
        cells = self.cells
        if cells:
            self.cells = []
            for cell in cells:
                cell.fold()


class _Count:
    """A counter child's increments since the last fold. Callers add positive amounts only: a
    zero sum is how the cell knows it is not listed yet."""

    __slots__ = ("amount", "tallies", "value")

    def __init__(self, value: Any, tallies: Tallies) -> None:
        self.value, self.tallies, self.amount = value, tallies, 0.0

    def inc(self, amount: float) -> None:
        if not self.amount:
            self.tallies.cells.append(self)
        self.amount += amount

    def fold(self) -> None:
        self.value.inc(self.amount)
        self.amount = 0.0


class _Observed:
    """A histogram child's observations since the last fold: one binary search and three adds
    (the library's `observe` checks the child and walks the buckets in Python every time)."""

    __slots__ = ("bounds", "buckets", "count", "counts", "sum", "tallies", "total")

    def __init__(self, total: Any, buckets: list[Any], bounds: list[float], tallies: Tallies):
        self.sum, self.buckets, self.bounds, self.tallies = total, buckets, bounds, tallies
        self.count, self.total, self.counts = 0, 0.0, [0] * len(buckets)

    def observe(self, amount: float) -> None:
        if not self.count:
            self.tallies.cells.append(self)
        self.count += 1
        self.total += amount
        # the first bound >= amount, as the library's; the last bound is +Inf
        self.counts[bisect_left(self.bounds, amount)] += 1

    def fold(self) -> None:
        self.sum.inc(self.total)
        for bucket, count in zip(self.buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        self.count, self.total, self.counts = 0, 0.0, [0] * len(self.buckets)


def _cell(child: Any, tallies: Tallies) -> Any:
    """For a Counter child a `_Count` of its value, for a Histogram child an `_Observed`; the
    child itself if this prometheus-client keeps them elsewhere (then as fast as before, and
    recorded at once). Our callers never pass a negative amount, which is all `Counter.inc`
    would check."""
    buckets, bounds, total = (
        getattr(child, n, None) for n in ("_buckets", "_upper_bounds", "_sum")
    )
    if buckets is not None and bounds is not None and total is not None:
        if len(bounds) == len(buckets) and bounds and bounds[-1] == float("inf"):
            return _Observed(total, buckets, bounds, tallies)
        return child
    if isinstance(child, Counter) and hasattr(getattr(child, "_value", None), "inc"):
        return _Count(child._value, tallies)
    return child


def prepare_multiprocess(workers: int) -> str | None:
    """Before starting several workers: give them one fresh directory for their samples.

    prometheus-client's multiprocess mode: every worker writes its counters and histograms to
    memory-mapped files there, and whichever worker answers /metrics sums them all. A directory
    the operator set is used as is (it must be emptied between runs, as prometheus-client says).
    """
    if workers > 1 and not multiprocess_dir():
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="keypool-metrics-")
    return multiprocess_dir()


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR: set (before start) when several workers serve one port."""
    return os.environ.get(MULTIPROC_ENV) or None


def _merged_registry() -> CollectorRegistry:
    """Every worker's samples, summed by prometheus-client from its per-process files."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class MeteredSink:
    """Counts each settled attempt, then hands it to the stats writer; O(1), no I/O."""

    def __init__(
        self,
        inner: UsageSink,
        metrics: Metrics | None,
        summary: TokenCounter | None = None,
        defer: Defer | None = None,
    ) -> None:
        self.inner = inner
        self.metrics = metrics
        self.summary = summary
        self.defer = defer  # the observability batch (observability/deferred.py), if any
        self._counter = self._count  # bound once, not per attempt

    def record(self, event: UsageEvent) -> None:
        if self.defer is not None:
            self.defer(self._counter, event)
        else:
            self._count(event)
        self.inner.record(event)

    def _count(self, event: UsageEvent) -> None:
        if self.metrics is not None:  # None with METRICS_ENABLED=false
            self.metrics.observe(event)
        if self.summary is not None:
            self.summary.add_tokens(event.prompt_tokens + event.completion_tokens)


class Defer(Protocol):
    def __call__(self, fn: Callable[..., None], *args: Any) -> None: ...


class TokenCounter(Protocol):
    def add_tokens(self, tokens: int) -> None: ...
