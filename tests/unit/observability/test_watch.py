"""StateWatcher: pool changes become one log line each and the pool-level alerts."""

from __future__ import annotations

import logging

import pytest

from app.config import load_settings
from app.metrics import Metrics
from app.observability.hub import Observability
from app.observability.watch import StateWatcher
from app.state.build import build_pools
from app.state.memory import MemoryStateStore

ENV = {
    "ALPHA_API_KEYS": "alpha-key-0000000000,alpha-key-1111111111",
    "ALPHA_BASE_URL": "http://127.0.0.1:9/v1",
    "ALPHA_DEFAULT_MODEL": "m",
}


def watcher() -> tuple[StateWatcher, MemoryStateStore, Observability]:
    settings = load_settings(ENV)
    store = MemoryStateStore(build_pools(settings))
    hub = Observability(settings.providers, Metrics())
    return StateWatcher(settings.providers, store, hub, clock=lambda: 1_000.0), store, hub


async def test_changes_logged_once_and_exhaustion_alerted(caplog: pytest.LogCaptureFixture):
    watch, store, hub = watcher()
    with caplog.at_level(logging.INFO):
        await watch.tick()
        await store.set_disabled("alpha", 0, True)
        await watch.tick()
        await watch.tick()
        await store.set_disabled("alpha", 1, True)
        await watch.tick()
    states = [r.getMessage() for r in caplog.records if r.name == "keypool.state"]
    assert states == [
        "key alpha:0:0000: active -> disabled",
        "key alpha:1:1111: active -> disabled",
    ]
    assert hub.alerts.emitted == {"health_degraded": 2, "provider_exhausted": 1}
    assert hub.watch_ticks == 4
