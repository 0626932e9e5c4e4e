"""The observability objects one gateway process owns, built in the lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from app.config import ProviderConfig
from app.metrics import Metrics
from app.observability.alerts import Alerts, HealthWatcher
from app.observability.logs import TransitionLog
from app.observability.summary import RecentErrors, RollingSummary


class Observability:
    """Rolling summary, recent errors, alerts and change-once logging, in one place."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        metrics: Metrics,
        *,
        webhook_url: str | None = None,
        alert_cooldown_s: float = 300.0,
        log_prompts: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.summary = RollingSummary(clock)
        self.errors = RecentErrors()
        self.alerts = Alerts(
            webhook_url, cooldown_s=alert_cooldown_s, clock=clock, on_emit=metrics.count_alert
        )
        self.transitions = TransitionLog()
        self.health = HealthWatcher(self.alerts)
        self.log_prompts = log_prompts
        self.watch_ticks = 0  # looks the StateWatcher has taken (tests wait on it)
        self._fingerprints = {
            (p.name, str(i)): key.fingerprint for p in providers for i, key in enumerate(p.keys)
        }

    def fingerprint(self, provider: str, key_index: str) -> str:
        """A key's fingerprint from the answer's headers (vault keys added later: provider:index)."""
        return self._fingerprints.get((provider, key_index)) or f"{provider}:{key_index}"

    def attempt_settled(
        self,
        provider: str,
        fingerprint: str,
        *,
        seconds: float | None = None,
        key_state: str | None = None,
        circuit: str | None = None,
        quota_exceeded: bool = False,
        reason: str | None = None,
    ) -> None:
        """What the settlement hook reports after each upstream attempt; O(1), never blocks.

        `key_state` / `circuit` are the states after the attempt: a change is logged once
        (shared with the watcher's dedupe), a breaker that opened raises `circuit_open`, and a
        key out of quota raises `quota_exceeded`.
        """
        if seconds is not None:
            self.metrics.observe_upstream(provider, seconds)
        if key_state is not None:
            self.transitions.log_transition("key", fingerprint, key_state, reason=reason)
        if circuit is not None:
            opened = self.transitions.log_transition("circuit", provider, circuit)
            if opened and circuit == "open":
                self.alerts.emit(
                    "circuit_open",
                    "critical",
                    f"circuit breaker of provider {provider} opened",
                    provider=provider,
                )
        if quota_exceeded:
            self.alerts.emit(
                "quota_exceeded",
                "critical",
                f"key {fingerprint} is out of quota (not a rate limit); it is marked failed",
                provider=provider,
            )

    def start(self) -> None:
        self.alerts.start()

    async def aclose(self) -> None:
        await self.alerts.aclose()
