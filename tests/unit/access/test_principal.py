"""Tier tables and how a caller's limits are resolved: key, then user, then tier."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.access.principal import resolve
from app.access.tiers import parse_tiers
from app.db.access import ClientKey, UserLimits

TIERS = parse_tiers("free:5,pro:30,enterprise:100", "free:1,pro:20,enterprise:0", "free")


def key(**changes: object) -> ClientKey:
    base: dict[str, object] = {
        "id": 1,
        "key_hash": "h",
        "key_prefix": "kp-abcde",
        "user_id": "alice",
        "tier": None,
        "name": None,
        "rpm": None,
        "daily_budget_usd": None,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return ClientKey(**{**base, **changes})  # type: ignore[arg-type]


def test_defaults_come_from_the_default_tier():
    who = resolve(TIERS, "bob", None)
    assert (who.tier, who.rpm, who.daily_budget_usd, who.source) == ("free", 5, 1.0, "service")


def test_key_values_override_user_values_which_override_the_tier():
    user = UserLimits(tier="pro", rpm=40, daily_budget_usd=None)
    assert resolve(TIERS, "alice", user, key()).rpm == 40
    assert resolve(TIERS, "alice", user, key()).daily_budget_usd == 20
    assert resolve(TIERS, "alice", user, key(rpm=7, daily_budget_usd=0.5)).rpm == 7
    assert resolve(TIERS, "alice", user, key(daily_budget_usd=0.0)).daily_budget_usd == 0.0
    assert resolve(TIERS, "alice", user, key(tier="enterprise")).tier == "enterprise"


@pytest.mark.parametrize(
    ("rpm", "budget", "default", "message"),
    [
        ("free", "free:1", "free", "TIER_RPM"),
        ("free:0", "free:1", "free", "at least 1"),
        ("free:5", "free:x", "free", "TIER_DAILY_BUDGET_USD"),
        ("free:5", "free:1", "gold", "DEFAULT_TIER"),
    ],
)
def test_bad_tier_tables_are_refused(rpm: str, budget: str, default: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_tiers(rpm, budget, default)
