"""The cache's counters in Prometheus form: `keypool_cache_requests_total{result}`.

A collector reads `CacheCounters` at scrape time, so the request path only bumps an int.
Register it on the process's registry: `registry.register(CacheCollector(cache.counters))`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from app.cache.service import CacheCounters


class CacheCollector(Collector):
    def __init__(self, counters: CacheCounters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "keypool_cache_requests",
            "Non-streaming chat requests by response-cache result (hit, miss, bypass).",
            labels=["result"],
        )
        family.add_metric(["hit"], self.counters.hits)
        family.add_metric(["miss"], self.counters.misses)
        family.add_metric(["bypass"], self.counters.bypasses)
        yield family
