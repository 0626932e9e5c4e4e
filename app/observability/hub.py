"""The observability objects one gateway process owns, built in the lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from app.config import ProviderConfig
from app.metrics import Metrics, multiprocess_dir
from app.observability.alerts import Alerts, HealthWatcher
from app.observability.deferred import Deferred
from app.observability.logs import TransitionLog, utc_now_iso
from app.observability.requestlog import request_log
from app.observability.summary import ErrorEntry, RecentErrors, RollingSummary

# Error types that mean "refused before any key was used" (keypool_user_rejections_total).
REJECTION_TYPES = frozenset(
    {"unauthorized", "invalid_api_key", "user_rate_limited", "budget_exceeded", "too_many_streams"}
)


class Observability:
    """Rolling summary, recent errors, alerts and change-once logging, in one place."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        metrics: Metrics | None,
        *,
        webhook_url: str | None = None,
        alert_cooldown_s: float = 300.0,
        log_prompts: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics  # None with METRICS_ENABLED=false: nothing for Prometheus
        # Metrics are summed in cells and handed to prometheus-client by `Metrics.fold`: before
        # every read here (`flush`: /metrics, tests), and with several workers after every
        # batch too, so another worker answering a scrape finds this one's files at most a
        # batch behind. One worker alone folds once per scrape instead of once per batch
        # (~15 locked adds each; measured inline, ~1 us a request at ~30 requests a batch).
        fold = metrics.fold if metrics is not None and multiprocess_dir() else None
        self.deferred = Deferred(after=fold)
        self.summary = RollingSummary(clock)
        self.errors = RecentErrors()
        self.alerts = Alerts(
            webhook_url,
            cooldown_s=alert_cooldown_s,
            clock=clock,
            on_emit=metrics.count_alert if metrics is not None else None,
        )
        self.transitions = TransitionLog()
        self.health = HealthWatcher(self.alerts)
        self.log_prompts = log_prompts
        self.watch_ticks = 0  # looks the StateWatcher has taken (tests wait on it)
        fixed = tuple(providers)
        self._providers: Callable[[], Sequence[ProviderConfig]] = lambda: fixed
        self._seen: Sequence[ProviderConfig] | None = None
        self._fingerprints: dict[tuple[str, str], str] = {}

    def follow(self, providers: Callable[[], Sequence[ProviderConfig]]) -> None:
        """Read the live key lists from now on (vault keys added while serving get named)."""
        self._providers = providers

    def fingerprint(self, provider: str, key_index: str) -> str:
        """A key's fingerprint from the answer's headers (unknown index: provider:index)."""
        current = self._providers()
        if current is not self._seen:  # the lists changed (or first look): index them again
            self._fingerprints = {
                (p.name, str(i)): key.fingerprint for p in current for i, key in enumerate(p.keys)
            }
            self._seen = current
        return self._fingerprints.get((provider, key_index)) or f"{provider}:{key_index}"

    def record_chat(
        self,
        route: str,
        status: int,
        seconds: float,
        *,
        provider: str | None = None,
        path: str | None = None,
        ttft_s: float | None = None,
        error_type: str | None = None,
        message: str = "",
        cost_usd: float | None = None,
        cache: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """One finished chat request into metrics, the summary and (if failed) recent errors.

        The HTTP middleware calls it for every chat route; a websocket handler calls it per
        request with route "/api/chat/ws". Tokens are not passed: they come per attempt from
        the usage sink.
        """
        self.deferred.call(
            self.record_chat_now,
            route,
            status,
            seconds,
            provider,
            path,
            ttft_s,
            error_type,
            message,
            cost_usd,
            cache,
            request_id,
        )

    def record_chat_now(
        self,
        route: str,
        status: int,
        seconds: float,
        provider: str | None,
        path: str | None,
        ttft_s: float | None,
        error_type: str | None,
        message: str,
        cost_usd: float | None,
        cache: str | None,
        request_id: str | None,
    ) -> None:
        """`record_chat` without the batch (the middleware's record is batched already)."""
        metrics = self.metrics
        if metrics is not None:
            metrics.observe_request(
                route, path or "none", provider or "none", status, seconds, cache or None
            )
            if ttft_s is not None and provider:
                metrics.observe_ttft(provider, ttft_s)
            if cost_usd:
                metrics.add_cost(provider or "none", cost_usd)
            if error_type in REJECTION_TYPES:
                metrics.count_rejection(error_type)
        ttft_ms = None if ttft_s is None else ttft_s * 1000
        latency_ms = seconds * 1000
        self.summary.add_request(
            status, latency_ms, provider, ttft_ms, error_type, cost_usd or 0.0, cache
        )
        if status >= 400:
            entry = ErrorEntry(
                utc_now_iso(), request_id, route, status, error_type or "", message, provider
            )
            self.errors.add(entry)

    def attempt_settled(
        self,
        provider: str,
        fingerprint: str,
        *,
        key_state: str | None = None,
        circuit: str | None = None,
        quota_exceeded: bool = False,
        reason: str | None = None,
    ) -> None:
        """What the settlement hook reports after an attempt whose states it read; O(1).

        `key_state` / `circuit` are the states after the attempt: a change is logged once
        (shared with the watcher's dedupe), a breaker that opened raises `circuit_open`, and a
        key out of quota raises `quota_exceeded`. (Durations come with the usage, through
        `metrics.MeteredSink`.)
        """
        if key_state is None and circuit is None and not quota_exceeded:
            return
        self.deferred.call(
            self._attempt_settled, provider, fingerprint, key_state, circuit, quota_exceeded, reason
        )

    def _attempt_settled(
        self,
        provider: str,
        fingerprint: str,
        key_state: str | None,
        circuit: str | None,
        quota_exceeded: bool,
        reason: str | None,
    ) -> None:
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

    def provider_exhausted(self, provider: str) -> None:
        """A request found no usable key on `provider` (deduplicated with the watcher's)."""
        self.alerts.emit(
            "provider_exhausted",
            "critical",
            f"provider {provider} has no usable key",
            provider=provider,
        )

    def budget_warning(self, user_id: str, spent_usd: float, budget_usd: float) -> None:
        """The access layer's 80% line (called once per user per day by its ledger)."""
        self.alerts.emit(
            "budget_warning",
            "warning",
            f"user {user_id} has spent ${spent_usd:.4f} of a ${budget_usd:.2f} daily budget",
            user_id=user_id,
            log=False,  # the access layer logs it (keypool.access)
        )

    def budget_exceeded(self, user_id: str, spent_usd: float, budget_usd: float) -> None:
        """The access layer's ledger reaching a user's budget (once per user per day)."""
        self.alerts.emit(
            "budget_exceeded",
            "warning",
            f"user {user_id} has spent its ${budget_usd:.2f} daily budget "
            f"(${spent_usd:.4f}); requests are refused until 00:00 UTC",
            user_id=user_id,
            log=False,  # the access layer logs it (keypool.access)
        )

    def start(self) -> None:
        self.alerts.start()

    def flush(self) -> None:
        """Record what is still batched (readers call this first: /metrics, the summary)."""
        self.deferred.flush()
        if self.metrics is not None:
            self.metrics.fold()

    async def aclose(self) -> None:
        self.flush()
        request_log.flush()  # the last batch's lines, before the process goes
        await self.alerts.aclose()
