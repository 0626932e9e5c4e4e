"""Turn rate of a pool from its keys' own paces: configured, or learned when nothing is set."""

from __future__ import annotations

import pytest

from app.keys.model import KeyStatus
from app.keys.pacing import REQUEST_HEADROOM, Pace
from app.keys.turns import turn_rate


def learned(per_minute: int) -> KeyStatus:
    return KeyStatus(learned_requests=per_minute, learned_requests_window=60.0)


def test_a_configured_budget_gives_every_key_its_rate():
    rate = turn_rate(Pace(rpm=60), [KeyStatus(), KeyStatus()])
    assert rate == pytest.approx(2 / (1 + REQUEST_HEADROOM))


def test_learned_limits_give_the_rate_when_nothing_is_configured():
    rate = turn_rate(Pace(), [learned(120), learned(60)])
    assert rate == pytest.approx(3 / (1 + REQUEST_HEADROOM))


def test_a_key_that_learned_nothing_makes_the_rate_unknown():
    assert turn_rate(Pace(), [learned(120), KeyStatus()]) is None
    assert turn_rate(Pace(), []) is None


def test_an_account_wide_limit_is_shared_by_the_keys():
    rate = turn_rate(Pace(), [learned(120), learned(120)], split=2)
    assert rate == pytest.approx(2 / (1 + REQUEST_HEADROOM))


def test_a_burst_lowers_the_sustained_rate():
    assert turn_rate(Pace(rpm=30, burst=5), [KeyStatus()]) == pytest.approx(
        26 / 60 / (1 + REQUEST_HEADROOM)
    )
