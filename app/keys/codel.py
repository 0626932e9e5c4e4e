"""Standing-queue detection (CoDel's idea, applied to requests waiting for a key turn).

A queue that absorbs a burst drains again; a standing queue, one that keeps growing because
demand stays above the pool's rate, only adds delay to every request and ends in timeouts. CoDel
tells them apart by the minimum wait over an interval: even the luckiest request of the interval
waited. Here a queue stands when that minimum is above `target_s` and grew by `growth` of the
interval in each of the last two intervals (demand at least that share above the pool's rate,
for more than a passing hiccup), or it is above `ceiling_s` whatever its trend. From then on the
excess (every arrival expected to wait longer than `bound_s` when the queue grew, `ceiling_s`
when it only stood high, of a user the caller judges to be sending it) is answered at once with
429 and a Retry-After of its expected wait. Arrivals that would start within the bound are
always let in, so the pool stays busy.

Why the trend and not the level alone: at exactly the pool's rate a backlog left by a hiccup (a
slow start, a pause) neither grows nor drains, and shedding it would only turn a short wait
into errors (such a backlog, or a slow overload, is only kept under the ceiling: what would wait
beyond it is shed, nothing else); at 150 % the minimum wait grows by half the interval every
interval and is caught within two or three. A pool of paced keys also hands out its turns in
clumps (each key's turns are spaced, their phases are not), so waits of tens of milliseconds
come and go at full load; their minimum stays low. Once a queue stands, admitted requests
should wait little: `bound_s` is a few key turns. Shedding ends once no arrival has been
expected to wait beyond the limit for a whole interval (demand fell back under the pool's rate),
not at the first short wait nor when the line empties: while shedding, admitted requests wait
about the bound by construction, and at 150 % the line is often empty *because* it sheds (ending
there let a backlog grow again, first come, first served, every few hundred milliseconds).
Only arrivals keep it on: a burst that arrived at once and then drains slowly shows a growing
minimum wait too, but nobody arrives to find the line long, so the next burst after it waits
instead of being refused.

Pure: the caller reports each wait as a request gets its turn, and passes the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_TARGET_S = 0.05
DEFAULT_INTERVAL_S = 0.1
DEFAULT_BOUND_S = 0.015
# A wait this long stands whatever its trend (a slow overload the trend misses, or the backlog
# a pool offered exactly its rate keeps), and is kept there.
DEFAULT_CEILING_S = 1.0
# The minimum wait growing by this share of the interval per interval: demand a quarter above
# the pool's rate, or more (smaller steps are what a busy host's hiccups add at full load).
DEFAULT_GROWTH = 0.25


@dataclass(frozen=True, slots=True)
class Shed:
    """Answer this arrival with 429 now; `retry_after_s` is whole seconds, at least 1."""

    retry_after_s: int


class StandingQueue:
    """Tracks the waits of requests getting their turn; says when to shed the excess."""

    __slots__ = (
        "_current",
        "_grew",
        "_limit",
        "_over_at",
        "_previous",
        "_shedding",
        "_started",
        "bound_s",
        "ceiling_s",
        "growth",
        "interval_s",
        "target_s",
    )

    def __init__(
        self,
        target_s: float = DEFAULT_TARGET_S,
        interval_s: float = DEFAULT_INTERVAL_S,
        bound_s: float = DEFAULT_BOUND_S,
        *,
        ceiling_s: float = DEFAULT_CEILING_S,
        growth: float = DEFAULT_GROWTH,
    ) -> None:
        if min(target_s, interval_s, bound_s, ceiling_s) <= 0 or growth < 0:
            raise ValueError("target_s, interval_s, bound_s and ceiling_s must be positive")
        self.target_s = target_s
        self.interval_s = interval_s
        self.bound_s = bound_s
        self.ceiling_s = ceiling_s
        self.growth = growth
        self._started: float | None = None  # when the current interval began
        self._current = math.inf  # the minimum wait seen in the current interval
        self._previous: float | None = None  # that of the interval before (None: no samples)
        self._grew = 0  # how many intervals in a row the minimum grew
        self._over_at = -math.inf  # the last arrival expected to wait beyond the limit
        self._limit = bound_s  # while shedding: the longest expected wait still admitted
        self._shedding = False

    def shedding(self, now: float) -> bool:
        """Whether a queue stands: detected, and an arrival found it long within an interval."""
        if self._shedding and now - self._over_at >= self.interval_s:
            self._shedding = False
        return self._shedding

    def observe(self, wait_s: float, now: float) -> None:
        """A request got its turn after waiting `wait_s` (0 when it did not wait at all)."""
        if self._started is None:
            self._started = now
        elif now - self._started >= self.interval_s:
            self._close_interval(now)
        self._current = min(self._current, wait_s)

    def booked(self, wait_s: float, now: float) -> None:
        """A request arrived and booked a turn `wait_s` ahead at once (outside any line): a turn
        observed, and an arrival that found the queue long if the wait is beyond the limit."""
        self.observe(wait_s, now)
        if wait_s > self._limit_now(now):
            self._over_at = now

    def _limit_now(self, now: float) -> float:
        """The longest expected wait that does not find the queue long: the shedding limit
        while a queue stands, else the bound."""
        return self._limit if self.shedding(now) else self.bound_s

    def _close_interval(self, now: float) -> None:
        low, before = self._current, self._previous
        grew = before is not None and low - before >= self.growth * self.interval_s
        self._grew = self._grew + 1 if grew else 0
        # Detection alone does not start shedding: `shedding` also needs an arrival that found
        # the line long within the last interval (`admit` keeps that time).
        if low >= self.target_s and self._grew >= 2:
            # Growing: demand is well above the rate. Cut the queue to a few turns.
            self._shedding, self._limit = True, self.bound_s
        elif low >= self.ceiling_s:
            # High but flat: keep it under the ceiling (stricter if it was growing before).
            limit = self._limit if self._shedding else self.ceiling_s
            self._shedding, self._limit = True, limit
        self._previous = low if math.isfinite(low) else None
        self._started, self._current = now, math.inf

    def idle(self) -> None:
        """The line is empty: the waits seen so far no longer say anything about the next.
        Shedding goes on until its own end (`shedding`): an empty line is what shedding makes."""
        self._started, self._current, self._previous, self._grew = None, math.inf, None, 0

    def admit(self, expected_wait_s: float, now: float, *, excess: bool = True) -> Shed | None:
        """None lets the arrival queue; a Shed refuses it (only while a queue stands, and only
        when it is the `excess`: the caller's judgement of whose flood made the queue)."""
        if expected_wait_s <= self._limit_now(now):
            return None
        self._over_at = now  # demand still finds the queue long
        if not self._shedding or not excess:
            return None
        seconds = expected_wait_s if math.isfinite(expected_wait_s) else self.interval_s
        return Shed(max(1, math.ceil(seconds)))
