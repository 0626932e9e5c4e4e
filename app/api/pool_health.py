"""The admin health view: key states from the state store, usage per key group from the DB."""

from __future__ import annotations

from typing import Any

from app.config import ProviderConfig
from app.keys.health import estimate_capacity, pool_status, status_message
from app.keys.learned import effective_limits, learned_of
from app.keys.model import KeyStatus
from app.state.base import KeyStateStore, ProviderSnapshot
from app.timefmt import iso_utc


def key_entry(
    provider: ProviderConfig, index: int, status: KeyStatus, now: float
) -> dict[str, Any]:
    """One `providers[].keys[]` item: fingerprint only, never the key."""
    state = status.effective_state(now)
    cooling = status.cooldown_until if state.value == "rate_limited" else None
    return {
        "key_index": index,
        "fingerprint": provider.keys[index].fingerprint,
        "state": state.value,
        "cooldown_until": iso_utc(cooling),
        "requests": status.requests,
        "errors": status.errors,
        "in_flight": status.in_flight,
        "limits": effective_limits(
            provider.rpm_per_key, provider.tpm_per_key, learned_of(status)
        ).as_dict(),
    }


def provider_entry(provider: ProviderConfig, snap: ProviderSnapshot, now: float) -> dict[str, Any]:
    return {
        "name": provider.name,
        "default_model": provider.default_model,
        "circuit": snap.circuit.value,
        "shared_limit_until": iso_utc(snap.shared_limit_until),
        # A key list that changed during the snapshot's round trip shows what both agree on.
        "keys": [
            key_entry(provider, i, s, now)
            for i, s in enumerate(snap.keys)
            if i < len(provider.keys)
        ],
    }


async def pool_health(
    providers: tuple[ProviderConfig, ...], store: KeyStateStore, now: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The `health` object and the `providers` list of GET /api/admin/api-keys/health."""
    entries = []
    total = active = 0
    per_provider: list[tuple[int, int | None]] = []
    for provider in providers:
        snap = await store.snapshot(provider.name, now)
        usable = sum(1 for s in snap.keys if s.usable(now))
        total += len(snap.keys)
        active += usable
        per_provider.append((usable, provider.rpm_per_key))
        entries.append(provider_entry(provider, snap, now))
    status = pool_status(active, total)
    capacity = estimate_capacity(per_provider)
    health = {
        "healthy": status != "CRITICAL",
        "totalKeys": total,
        "activeKeys": active,
        "status": status,
        "message": status_message(status, active, total),
        "estimatedCapacity": {
            "dailyUsers": capacity.daily_users,
            "concurrentUsers": capacity.concurrent_users,
            "requestsPerDay": capacity.requests_per_day,
        },
    }
    return health, entries
