"""StateWatcher: pool changes become one log line each and the pool-level alerts."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from app.chat.directory import ProviderDirectory
from app.config import ApiKey, load_settings
from app.metrics import Metrics
from app.observability.hub import Observability
from app.observability.watch import StateWatcher
from app.state.base import KeyLayout
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


async def test_keys_added_while_serving_are_watched_by_their_fingerprint(
    caplog: pytest.LogCaptureFixture,
):
    settings = load_settings(ENV)
    store = MemoryStateStore(build_pools(settings))
    directory = ProviderDirectory(settings.providers)
    hub = Observability(settings.providers, Metrics())
    hub.follow(directory.all)
    watch = StateWatcher(directory.all, store, hub, clock=lambda: 1_000.0)
    await watch.tick()
    alpha = directory.get("alpha")
    added = replace(alpha, keys=(*alpha.keys, ApiKey("vault-key-2222222222", "alpha:v7:2222")))
    layout = KeyLayout((0, 1, None), ("0", "1", "v7"), (1.0, 1.0, 1.0))
    store.resize("alpha", layout)
    directory.replace(added, layout.moved_from)
    with caplog.at_level(logging.INFO):
        await store.set_disabled("alpha", 2, True)
        await watch.tick()
    states = [r.getMessage() for r in caplog.records if r.name == "keypool.state"]
    assert states == ["key alpha:v7:2222: active -> disabled"]
    assert hub.fingerprint("alpha", "2") == "alpha:v7:2222"  # the answers' key, by name
