"""Standing-queue detection (CoDel's idea, applied to requests waiting for a key turn).

A queue that absorbs a burst drains again; a standing queue, one that never empties because
demand stays above the pool's rate, only adds delay to every request and ends in timeouts. CoDel
tells them apart by the minimum wait over an interval: if even the luckiest request of the last
`interval_s` waited more than `target_s`, the queue is standing. From then on the excess (every
arrival that would have to wait longer than `target_s`) is answered at once with 429 and a
Retry-After of its expected wait, until a request waits less than the target again. Arrivals
that would start within the target are always let in, so the pool stays busy.

Pure: the caller reports each wait as a request leaves the queue, and passes the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_TARGET_S = 0.5
DEFAULT_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class Shed:
    """Answer this arrival with 429 now; `retry_after_s` is whole seconds, at least 1."""

    retry_after_s: int


class StandingQueue:
    """Tracks the waits of requests leaving the queue; says when to shed the excess."""

    __slots__ = ("_above_since", "_shedding", "interval_s", "target_s")

    def __init__(
        self, target_s: float = DEFAULT_TARGET_S, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        if target_s <= 0 or interval_s <= 0:
            raise ValueError("target_s and interval_s must be positive")
        self.target_s = target_s
        self.interval_s = interval_s
        self._above_since: float | None = None  # when waits first stayed above the target
        self._shedding = False

    @property
    def shedding(self) -> bool:
        return self._shedding

    def observe(self, wait_s: float, now: float) -> None:
        """A request got its turn after waiting `wait_s` (0 when it did not wait at all)."""
        if wait_s < self.target_s:
            self._above_since = None  # one short wait is enough: the queue drained
            self._shedding = False
            return
        if self._above_since is None:
            self._above_since = now
        elif now - self._above_since >= self.interval_s:
            self._shedding = True

    def idle(self) -> None:
        """The queue is empty: whatever stood there is gone."""
        self._above_since = None
        self._shedding = False

    def admit(self, expected_wait_s: float) -> Shed | None:
        """None lets the arrival queue; a Shed refuses it (only while a queue stands)."""
        if not self._shedding or expected_wait_s <= self.target_s:
            return None
        seconds = expected_wait_s if math.isfinite(expected_wait_s) else self.interval_s
        return Shed(max(1, math.ceil(seconds)))
