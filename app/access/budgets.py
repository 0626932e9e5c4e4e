"""Per-user spend for the current UTC day, in memory: the budget check costs a dict lookup."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta

logger = logging.getLogger("keypool.access")

WARN_FRACTION = 0.8
WarningSink = Callable[[str, float, float], None]  # (user_id, spent_usd, budget_usd)


def utc_day(now: float) -> date:
    return datetime.fromtimestamp(now, UTC).date()


def next_utc_midnight(now: float) -> float:
    return datetime.combine(utc_day(now) + timedelta(days=1), datetime.min.time(), UTC).timestamp()


def seconds_to_next_utc_midnight(now: float) -> float:
    return next_utc_midnight(now) - now


def log_budget_warning(user_id: str, spent_usd: float, budget_usd: float) -> None:
    logger.warning(
        "budget_warning: user %r has spent $%.4f of its $%.2f daily budget",
        user_id,
        spent_usd,
        budget_usd,
    )


def log_budget_exceeded(user_id: str, spent_usd: float, budget_usd: float) -> None:
    logger.warning(
        "budget_exceeded: user %r has spent $%.4f, reaching its $%.2f daily budget",
        user_id,
        spent_usd,
        budget_usd,
    )


class BudgetLedger:
    """Spend per user for one UTC day; rolls over to an empty day at UTC midnight.

    A budget of 0 (or less) means no limit. Crossing WARN_FRACTION of a budget calls `on_warning`
    once per user per day, and reaching the budget calls `on_exceeded` once per user per day
    (the alert seams: log lines by default); the clock is injected so day changes are testable.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        on_warning: WarningSink = log_budget_warning,
        on_exceeded: WarningSink = log_budget_exceeded,
    ) -> None:
        self._clock = clock
        self._on_warning = on_warning
        self._on_exceeded = on_exceeded
        self._spent: dict[str, float] = {}
        self._warned: set[str] = set()
        self._exceeded: set[str] = set()
        self._start_day(clock())

    def _start_day(self, now: float) -> None:
        self._day = utc_day(now)
        # The day's bounds as epoch seconds: the per-request check is two float comparisons.
        self._ends = next_utc_midnight(now)
        self._starts = self._ends - 86_400.0

    def _roll(self, now: float) -> None:
        if self._starts <= now < self._ends:
            return
        if utc_day(now) != self._day:
            self._spent.clear()
            self._warned.clear()
            self._exceeded.clear()
        self._start_day(now)

    @property
    def day(self) -> date:
        """The UTC day being counted (as of the last check or booking)."""
        return self._day

    def load(
        self,
        day: date,
        spent: Mapping[str, float],
        budget_of: Callable[[str], float] | None = None,
    ) -> None:
        """Seed from the database (today's `user_daily_usage`); other days are ignored.

        A user already past the warning line there was warned by whoever recorded that spend
        (this process before a restart, or another instance): it is not warned again.
        """
        self._roll(self._clock())
        if day != self._day:
            return
        for user_id, usd in spent.items():
            self._spent[user_id] = max(self._spent.get(user_id, 0.0), usd)
            budget = budget_of(user_id) if budget_of is not None else 0.0
            if budget > 0 and usd >= WARN_FRACTION * budget:
                self._warned.add(user_id)
            if budget > 0 and usd >= budget:
                self._exceeded.add(user_id)

    def spent(self, user_id: str) -> float:
        self._roll(self._clock())
        return self._spent.get(user_id, 0.0)

    def exhausted(self, user_id: str, budget_usd: float) -> float | None:
        """None while the user may spend; else the seconds until the next UTC midnight."""
        if budget_usd <= 0:
            return None
        now = self._clock()
        self._roll(now)
        if self._spent.get(user_id, 0.0) < budget_usd:
            return None
        return self._ends - now

    def add(self, user_id: str, cost_usd: float, budget_usd: float) -> float:
        """Record spend; returns the user's total for today."""
        self._roll(self._clock())
        before = self._spent.get(user_id, 0.0)
        total = before + max(0.0, cost_usd)
        self._spent[user_id] = total
        if budget_usd > 0 and total >= WARN_FRACTION * budget_usd and user_id not in self._warned:
            self._warned.add(user_id)
            _alert(self._on_warning, "budget_warning", user_id, total, budget_usd)
        if budget_usd > 0 and total >= budget_usd and user_id not in self._exceeded:
            self._exceeded.add(user_id)
            _alert(self._on_exceeded, "budget_exceeded", user_id, total, budget_usd)
        return total


def _alert(sink: WarningSink, name: str, user_id: str, spent: float, budget: float) -> None:
    try:
        sink(user_id, spent, budget)
    except Exception:  # an alert channel must never fail the request that paid
        logger.exception("%s sink failed", name)
