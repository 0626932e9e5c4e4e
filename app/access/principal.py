"""Who is calling, with the limits that bind them, resolved from key, user overrides and tier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.access.tiers import Tiers
from app.db.access import ClientKey, UserLimits

Source = Literal["client_key", "service"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. daily_budget_usd 0 = no budget limit."""

    user_id: str
    tier: str
    rpm: int
    daily_budget_usd: float
    source: Source
    client_id: int | None = None


def resolve(
    tiers: Tiers,
    user_id: str,
    user: UserLimits | None,
    key: ClientKey | None = None,
) -> Principal:
    """Key's own value, else the user's, else the tier's (key tier, else user tier, else default)."""
    user = user or UserLimits()
    tier = (key.tier if key else None) or user.tier or tiers.default
    if not tiers.known(tier):
        tier = tiers.default
    rpm = (key.rpm if key else None) or user.rpm or tiers.rpm_of(tier)
    budget = key.daily_budget_usd if key and key.daily_budget_usd is not None else None
    if budget is None:
        budget = user.daily_budget_usd
    if budget is None:
        budget = tiers.budget_of(tier)
    return Principal(
        user_id,
        tier,
        rpm,
        budget,
        "client_key" if key else "service",
        key.id if key else None,
    )
