"""The daily spend ledger: limits, UTC-day reset and the single 80% warning."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.access.budgets import BudgetLedger, seconds_to_next_utc_midnight, utc_day


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


def noon() -> Clock:
    return Clock(datetime(2026, 12, 6, 12, 0, tzinfo=UTC))


def test_spend_at_the_budget_is_refused_until_next_utc_midnight():
    clock = noon()
    ledger = BudgetLedger(clock, lambda *a: None)
    ledger.add("u", 0.6, 1.0)
    assert ledger.exhausted("u", 1.0) is None
    ledger.add("u", 0.4, 1.0)
    assert ledger.exhausted("u", 1.0) == 12 * 3600

    clock.now = datetime(2026, 12, 7, 0, 0, 1, tzinfo=UTC).timestamp()
    assert ledger.exhausted("u", 1.0) is None
    assert ledger.spent("u") == 0


def test_zero_budget_means_no_limit():
    ledger = BudgetLedger(noon(), lambda *a: None)
    ledger.add("u", 1e6, 0)
    assert ledger.exhausted("u", 0) is None


def test_crossing_80_percent_warns_exactly_once_per_user_per_day():
    clock = noon()
    warnings: list[tuple[str, float, float]] = []
    ledger = BudgetLedger(clock, lambda *a: warnings.append(a))
    ledger.add("u", 0.5, 1.0)
    assert warnings == []
    ledger.add("u", 0.35, 1.0)
    ledger.add("u", 0.1, 1.0)
    ledger.add("u", 5.0, 1.0)
    ledger.add("v", 0.9, 1.0)
    assert [w[0] for w in warnings] == ["u", "v"]

    clock.now += 86_400
    ledger.add("u", 0.85, 1.0)
    assert [w[0] for w in warnings] == ["u", "v", "u"]


def test_a_failing_warning_sink_does_not_break_recording():
    def boom(*_: object) -> None:
        raise RuntimeError("webhook down")

    ledger = BudgetLedger(noon(), boom)
    assert ledger.add("u", 0.9, 1.0) == 0.9


def test_loading_seeds_only_today():
    clock = noon()
    ledger = BudgetLedger(clock, lambda *a: None)
    ledger.load(utc_day(clock.now), {"u": 0.7})
    ledger.load(datetime(2026, 12, 5, tzinfo=UTC).date(), {"v": 5})
    assert ledger.spent("u") == 0.7
    assert ledger.spent("v") == 0


def test_seconds_to_midnight():
    assert (
        seconds_to_next_utc_midnight(datetime(2026, 12, 6, 23, 59, 30, tzinfo=UTC).timestamp())
        == 30
    )


def test_a_user_loaded_past_the_warning_line_is_not_warned_again():
    clock = noon()
    warnings: list[tuple[str, float, float]] = []
    ledger = BudgetLedger(clock, lambda *a: warnings.append(a))
    ledger.load(utc_day(clock.now), {"u": 0.85, "v": 0.5}, lambda user: 1.0)
    ledger.add("u", 0.01, 1.0)
    ledger.add("v", 0.4, 1.0)
    assert [w[0] for w in warnings] == ["v"]


def test_reaching_the_budget_alerts_exactly_once_per_user_per_day():
    clock = noon()
    reached: list[tuple[str, float, float]] = []
    ledger = BudgetLedger(clock, lambda *a: None, lambda *a: reached.append(a))
    ledger.add("u", 0.9, 1.0)
    assert reached == []
    ledger.add("u", 0.1, 1.0)
    ledger.add("u", 0.5, 1.0)  # overshoot by a request in flight: no second alert
    assert reached == [("u", 1.0, 1.0)]
    clock.now = datetime(2026, 12, 7, 0, 0, 1, tzinfo=UTC).timestamp()
    ledger.add("u", 2.0, 1.0)
    assert [r[0] for r in reached] == ["u", "u"]  # a new day, a new alert


def test_the_day_turns_at_exactly_utc_midnight_and_a_clock_set_back_a_day_starts_afresh():
    clock = Clock(datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC))
    ledger = BudgetLedger(clock, lambda *a: None)
    ledger.add("u", 1.0, 1.0)
    clock.now = datetime(2026, 12, 7, tzinfo=UTC).timestamp() - 1e-3
    assert ledger.exhausted("u", 1.0) == pytest.approx(1e-3, abs=1e-6)
    clock.now = datetime(2026, 12, 7, tzinfo=UTC).timestamp()
    assert ledger.exhausted("u", 1.0) is None
    assert ledger.day == datetime(2026, 12, 7).date()
    ledger.add("u", 1.0, 1.0)

    clock.now = datetime(2026, 12, 6, 12, tzinfo=UTC).timestamp()  # an NTP step back
    assert ledger.exhausted("u", 1.0) is None
    assert ledger.day == datetime(2026, 12, 6).date()
