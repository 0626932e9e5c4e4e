"""Key recovery: probe failed and unannounced-cooling keys with a cheap `GET /models`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from app.chat.clients import ClientCache
from app.chat.directory import ProviderDirectory
from app.config import ProviderConfig
from app.keys.model import KeyState
from app.keys.transitions import needs_probe
from app.providers.errors import UpstreamError
from app.state.base import KeyStateStore, ProbeClaims

logger = logging.getLogger("keypool.recovery")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    provider: str
    key_index: int
    fingerprint: str
    ok: bool
    status: int | None
    latency_ms: float
    state: KeyState

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "key_index": self.key_index,
            "fingerprint": self.fingerprint,
            "ok": self.ok,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 2),
            "state": self.state.value,
        }


class KeyProber:
    """Background recovery. Probes never count as requests and never feed the breaker."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig] | ProviderDirectory,
        store: KeyStateStore,
        clients: ClientCache,
        *,
        interval_s: float = 30.0,
        min_active_keys: int = 5,
        concurrency: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = (
            providers if isinstance(providers, ProviderDirectory) else ProviderDirectory(providers)
        )
        self.store = store
        self.clients = clients
        self.interval_s = interval_s
        self.min_active_keys = min_active_keys
        self.clock = clock
        self._limit = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()

    @property
    def providers(self) -> dict[str, ProviderConfig]:
        """Every provider with its current keys (the vault may change them while serving)."""
        return self.directory.by_name()

    def nudge(self) -> None:
        """A key just failed: let the loop check at once whether probing should turn eager."""
        self._wake.set()

    async def probe_key(self, provider: str, index: int) -> ProbeResult:
        config = self.providers[provider]
        generation = self.directory.generation(provider)
        client = self.clients.get(provider, index, config.default_model)
        async with self._limit:
            started = time.perf_counter()
            try:
                status: int | None = await client.probe()
            except UpstreamError:
                status = None
            latency = (time.perf_counter() - started) * 1000
        ok = status is not None and 200 <= status < 300
        auth_failed = status in (401, 402, 403)
        fingerprint = config.keys[index].fingerprint
        now_at = self.directory.follow(provider, index, generation)
        if now_at is None:  # the key was deleted while it was probed: nothing to record
            state = KeyState.FAILED if auth_failed else KeyState.ACTIVE
            return ProbeResult(provider, index, fingerprint, ok, status, latency, state)
        record = await self.store.record_probe(
            provider, now_at, ok=ok, auth_failed=auth_failed, now=self.clock()
        )
        return ProbeResult(
            provider,
            now_at,
            fingerprint,
            ok,
            status,
            latency,
            record.effective_state(self.clock()),
        )

    async def probe_all(self) -> list[ProbeResult]:
        """Every key of every provider, in parallel (the admin's "probe now")."""
        jobs = [
            self.probe_key(name, i)
            for name, p in self.providers.items()
            for i in range(len(p.keys))
        ]
        return list(await asyncio.gather(*jobs))

    async def probe_round(self) -> tuple[list[ProbeResult], bool]:
        """Probe the keys that need it; also say whether any provider is short of usable keys."""
        now = self.clock()
        jobs: list[Coroutine[Any, Any, ProbeResult]] = []
        eager = False
        for name, provider in self.providers.items():
            generation = self.directory.generation(name)
            snap = await self.store.snapshot(name, now)
            if generation != self.directory.generation(name):
                continue  # its key list changed meanwhile: the next round sees the new one
            usable = sum(1 for s in snap.keys if s.usable(now))
            eager = eager or usable < min(self.min_active_keys, len(provider.keys))
            for i, status in enumerate(snap.keys):
                if needs_probe(status, now) and await self._claim(name, i):
                    jobs.append(self.probe_key(name, i))
        return list(await asyncio.gather(*jobs)), eager

    async def _claim(self, provider: str, index: int) -> bool:
        """With shared state, one instance probes a key per eager period (a Redis lock)."""
        if not isinstance(self.store, ProbeClaims):
            return True
        return await self.store.claim_probe(provider, index, max(1.0, self.interval_s / 5))

    async def run(self) -> None:
        """Rounds every `interval_s`, every `interval_s / 5` while a provider is short of keys.

        A failing key (`nudge`) brings the next round forward, but never closer than
        `interval_s / 5` to the previous one: a flood of errors must not become a flood of probes.
        """
        loop = asyncio.get_running_loop()
        eager, last_round = False, -math.inf
        while True:
            period = self.interval_s / 5 if eager else self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=period)
            self._wake.clear()
            gap = last_round + self.interval_s / 5 - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
            last_round = loop.time()
            try:
                results, eager = await self.probe_round()
            except Exception as exc:  # keep recovering whatever one round hit
                logger.warning("probe round failed: %s", type(exc).__name__)
                continue
            revived = [r for r in results if r.ok and r.state is KeyState.ACTIVE]
            if revived:
                logger.info("recovered keys: %s", ", ".join(r.fingerprint for r in revived))
