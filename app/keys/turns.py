"""How many key turns per second a pool hands out, for the fair line's admission (fairness.py).

With `<P>_RPM_PER_KEY` configured this is known from the configuration. Without it, a pool paced
by learned limits (announced `x-ratelimit-limit-*`, see `learned.py`) still has a rate: each key
starts one request per its own `request_interval`. Summing those gives the line the same "can this
wait end before the deadline?" answer it has with configured limits.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.keys.learned import pace_of
from app.keys.model import KeyStatus
from app.keys.pacing import Pace


def turn_rate(pace: Pace, statuses: Sequence[KeyStatus], split: int = 1) -> float | None:
    """Turns per second of the keys in `statuses`, each at its own pace (`pace`, gaps filled by
    what it learned; learned budgets divided by `split` for an account-wide limit).

    None (unknown) when a key has no request budget at all: its turns are not bounded, so the
    line cannot tell how long a wait is.
    """
    total = 0.0
    for status in statuses:
        interval = pace_of(pace, status, split).request_interval
        if interval <= 0.0:
            return None
        total += 1.0 / interval
    return total or None
