"""StateWatcher: a background look at the pool every few seconds, for logs and alerts.

It diffs key states and breakers against the last look, so each change is logged once, and
raises `circuit_open`, `provider_exhausted` and `health_degraded` alerts. It reads the state
store only (one snapshot per provider per tick), never the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from app.config import ProviderConfig
from app.keys.health import pool_status, status_message
from app.observability.hub import Observability
from app.state.base import KeyStateStore

logger = logging.getLogger("keypool.watch")


class StateWatcher:
    def __init__(
        self,
        providers: Sequence[ProviderConfig] | Callable[[], Sequence[ProviderConfig]],
        store: KeyStateStore,
        hub: Observability,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A callable reads the live key lists (the vault adds and removes keys while serving).
        if callable(providers):
            self._providers = providers
        else:
            fixed = tuple(providers)
            self._providers = lambda: fixed
        self.store = store
        self.hub = hub
        self.interval_s = interval_s
        self.clock = clock

    async def tick(self) -> None:
        now = self.clock()
        total = usable_total = 0
        for provider in self._providers():
            snap = await self.store.snapshot(provider.name, now)
            usable = 0
            for index, status in enumerate(snap.keys):
                state = status.effective_state(now).value
                usable += status.usable(now)
                # A key list changing between the snapshot and this look: name it by index.
                fingerprint = (
                    provider.keys[index].fingerprint
                    if index < len(provider.keys)
                    else f"{provider.name}:{index}"
                )
                self.hub.transitions.log_transition("key", fingerprint, state)
            self.hub.attempt_settled(provider.name, provider.name, circuit=snap.circuit.value)
            if snap.keys and usable == 0:
                self.hub.alerts.emit(
                    "provider_exhausted",
                    "critical",
                    f"provider {provider.name} has no usable key",
                    provider=provider.name,
                )
            total += len(snap.keys)
            usable_total += usable
        health = pool_status(usable_total, total)
        self.hub.health.observe(health, status_message(health, usable_total, total))
        self.hub.watch_ticks += 1

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a store hiccup must not end the watching
                logger.warning("state watch failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval_s)
