"""Alerts: logged at WARNING and POSTed to ALERT_WEBHOOK_URL by a background task.

`emit` never waits: it dedupes, logs, and puts the alert on a bounded queue (a full queue
drops and counts). One sender task POSTs each alert with a short timeout and up to 3 retries
with backoff, so a webhook that hangs or fails only delays other alerts, never a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

logger = logging.getLogger("keypool.alerts")

ALERT_TYPES = frozenset(
    {
        "provider_exhausted",
        "circuit_open",
        "health_degraded",
        "budget_warning",
        "budget_exceeded",
        "quota_exceeded",
    }
)
Severity = Literal["warning", "critical"]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Alert:
    type: str
    severity: Severity
    message: str
    at: float
    provider: str | None = None
    user_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "severity": self.severity,
            "message": self.message,
        }
        if self.provider is not None:
            body["provider"] = self.provider
        if self.user_id is not None:
            body["user_id"] = self.user_id
        body["at"] = datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z")
        return body


class AlertDeduper:
    """One alert per (type, subject) per `cooldown_s`; pure, with an injected clock value."""

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._last: dict[tuple[str, str], float] = {}

    def admit(self, kind: str, subject: str, now: float) -> bool:
        last = self._last.get((kind, subject))
        if last is not None and now - last < self.cooldown_s:
            return False
        self._last[(kind, subject)] = now
        if len(self._last) > 10_000:  # bounded: forget the oldest subjects
            for stale in sorted(self._last, key=self._last.__getitem__)[:1000]:
                del self._last[stale]
        return True


class Alerts:
    """The dispatcher; `start()` from a running loop, `aclose()` on shutdown."""

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        queue_size: int = 256,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Sleep = asyncio.sleep,
        on_emit: Callable[[str], None] | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        self.on_emit = on_emit
        self.clock = clock
        self.deduper = AlertDeduper(cooldown_s)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self.emitted: dict[str, int] = {}
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def emit(
        self,
        type: str,
        severity: Severity,
        message: str,
        provider: str | None = None,
        user_id: str | None = None,
        *,
        subject: str | None = None,
        log: bool = True,
    ) -> bool:
        """Returns whether the alert went out (False: a duplicate within the cooldown).

        `log=False` when the caller's own log line already says it (one line per event)."""
        if type not in ALERT_TYPES:
            raise ValueError(f"unknown alert type {type!r}")
        now = self.clock()
        if not self.deduper.admit(type, subject or provider or user_id or "", now):
            return False
        alert = Alert(type, severity, message, now, provider, user_id)
        self.emitted[type] = self.emitted.get(type, 0) + 1
        if self.on_emit is not None:
            self.on_emit(type)
        if log:
            logger.warning("alert %s (%s): %s", type, severity, message, extra={"alert": type})
        if self.webhook_url is None:
            return True
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1
        return True

    def start(self) -> None:
        if self.webhook_url is not None and self._task is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
            self._task = asyncio.create_task(self._send_loop(), name="keypool-alerts")

    async def _send_loop(self) -> None:
        while True:
            alert = await self._queue.get()
            await self._deliver(alert)

    async def _deliver(self, alert: Alert) -> bool:
        assert self._client is not None
        assert self.webhook_url is not None
        body = alert.as_dict()
        for attempt in range(self.retries + 1):
            try:
                response = await self._client.post(self.webhook_url, json=body)
                if response.status_code < 300:
                    self.sent += 1
                    return True
            except httpx.HTTPError:
                pass
            if attempt < self.retries:
                await self.sleep(self.backoff_s * 2**attempt)
        self.failed += 1
        logger.warning(
            "alert %s not delivered to the webhook after %d tries", alert.type, self.retries + 1
        )
        return False

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None


BAD_STATUSES = ("DEGRADED", "CRITICAL")


class HealthWatcher:
    """Emits `health_degraded` when the pool status falls to DEGRADED or CRITICAL.

    Pure edge detection: DEGRADED then CRITICAL are two falls (two alerts); staying put or
    recovering is none. The dispatcher's cooldown (subject = the status) limits repeats.
    """

    def __init__(self, alerts: Alerts) -> None:
        self.alerts = alerts
        self.last: str | None = None

    def observe(self, status: str, message: str = "") -> bool:
        previous, self.last = self.last, status
        if status not in BAD_STATUSES or status == previous:
            return False
        if previous == "CRITICAL" and status == "DEGRADED":
            return False  # an improvement, not a fall
        severity: Severity = "critical" if status == "CRITICAL" else "warning"
        text = message or f"key pool health is {status}"
        return self.alerts.emit("health_degraded", severity, text, subject=status)
