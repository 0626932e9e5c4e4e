"""Tiers: the tables of `TIER_RPM` and `TIER_DAILY_BUDGET_USD` (parsed by config) and lookups."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import parse_tier_tables


@dataclass(frozen=True, slots=True)
class Tiers:
    """Requests per minute and USD per UTC day by tier; a budget of 0 means no limit."""

    rpm: dict[str, int]
    daily_budget_usd: dict[str, float]
    default: str

    def known(self, tier: str) -> bool:
        return tier in self.rpm

    def rpm_of(self, tier: str) -> int:
        return self.rpm.get(tier, self.rpm[self.default])

    def budget_of(self, tier: str) -> float:
        return self.daily_budget_usd.get(tier, 0.0)


def parse_tiers(rpm: str, budgets: str, default: str) -> Tiers:
    """Tiers are the names in TIER_RPM; a tier without a budget entry has no budget limit."""
    rpm_table, budget_table = parse_tier_tables(rpm, budgets, default)
    return Tiers(rpm_table, budget_table, default)
