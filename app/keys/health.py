"""Health view math: pool status from the share of active keys, and a capacity estimate."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Share of keys active needed for each status (documented in the README).
THRESHOLDS = (("EXCELLENT", 0.9), ("GOOD", 0.7), ("DEGRADED", 0.4))
MESSAGES = {
    "EXCELLENT": "All systems nominal: {active}/{total} keys active.",
    "GOOD": "Healthy with reduced headroom: {active}/{total} keys active.",
    "DEGRADED": "Degraded: only {active}/{total} keys active; add or fix keys.",
    "CRITICAL": "Critical: {active}/{total} keys active; users are likely seeing errors.",
}
# Capacity model: a chat user sends about 2 requests a minute while active and 20 a day.
REQUESTS_PER_ACTIVE_USER_PER_MIN = 2
REQUESTS_PER_USER_PER_DAY = 20
DEFAULT_RPM_PER_KEY = 30


@dataclass(frozen=True, slots=True)
class Capacity:
    requests_per_day: int
    concurrent_users: int
    daily_users: int


def pool_status(active: int, total: int) -> str:
    share = active / total if total else 0.0
    for status, minimum in THRESHOLDS:
        if share >= minimum:
            return status
    return "CRITICAL"


def status_message(status: str, active: int, total: int) -> str:
    return MESSAGES[status].format(active=active, total=total)


def estimate_capacity(active_rpm: Iterable[tuple[int, int | None]]) -> Capacity:
    """`active_rpm` yields (active keys, RPM per key or None) per provider."""
    per_minute = sum(n * (rpm or DEFAULT_RPM_PER_KEY) for n, rpm in active_rpm)
    per_day = per_minute * 60 * 24
    return Capacity(
        requests_per_day=per_day,
        concurrent_users=per_minute // REQUESTS_PER_ACTIVE_USER_PER_MIN,
        daily_users=per_day // REQUESTS_PER_USER_PER_DAY,
    )
