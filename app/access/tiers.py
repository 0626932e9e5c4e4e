"""Tier tables (`TIER_RPM`, `TIER_DAILY_BUDGET_USD`) parsed once into plain dicts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger("keypool.access")


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


def parse_table(name: str, raw: str, kind: type[int] | type[float]) -> dict[str, float]:
    """`free:5,pro:30` → {"free": 5, "pro": 30}; ValueError names the variable and the bad item."""
    table: dict[str, float] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        tier, sep, value = item.partition(":")
        tier = tier.strip()
        try:
            number = kind(value.strip())
        except ValueError:
            number = -1
        if not sep or not tier or number < 0:
            raise ValueError(f"{name} must be `tier:number` pairs, comma-separated; got {item!r}")
        table[tier] = number
    if not table:
        raise ValueError(f"{name} names no tier")
    return table


def parse_tiers(rpm: str, budgets: str, default: str) -> Tiers:
    """Tiers are the names in TIER_RPM; a tier without a budget entry has no budget limit."""
    rpm_table = {tier: int(v) for tier, v in parse_table("TIER_RPM", rpm, int).items()}
    for tier, value in rpm_table.items():
        if value < 1:
            raise ValueError(f"TIER_RPM: tier {tier!r} needs at least 1 request per minute")
    budget_table = parse_table("TIER_DAILY_BUDGET_USD", budgets, float)
    unknown = sorted(set(budget_table) - set(rpm_table))
    if unknown:  # e.g. TIER_RPM narrowed while the default budget table still names `pro`
        logger.warning(
            "TIER_DAILY_BUDGET_USD: ignoring tiers not in TIER_RPM: %s", ", ".join(unknown)
        )
        budget_table = {t: v for t, v in budget_table.items() if t in rpm_table}
    if default not in rpm_table:
        raise ValueError(f"DEFAULT_TIER {default!r} is not a tier of TIER_RPM")
    return Tiers(rpm_table, budget_table, default)
