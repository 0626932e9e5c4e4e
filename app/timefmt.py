"""Timestamps in the JSON the gateway answers: ISO-8601, UTC, `Z` suffix."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(value: datetime | float | None) -> str | None:
    """A datetime (any zone) or unix seconds as `2026-01-02T03:04:05Z`; None stays None."""
    if value is None:
        return None
    moment = (
        value.astimezone(UTC) if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    )
    return moment.isoformat().replace("+00:00", "Z")
