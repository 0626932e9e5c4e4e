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

    def start(self) -> None:
        self.alerts.start()

    async def aclose(self) -> None:
        await self.alerts.aclose()
