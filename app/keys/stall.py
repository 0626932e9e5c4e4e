"""Hang detection: a key busy for much longer than it usually takes to answer stops being chosen.

A key that accepts connections but never answers costs every request sent to it a full upstream
timeout. Its in-flight requests give it away well before that: if the key has had requests in
flight and no answer for `STALL_FACTOR` times its usual latency (and at least `STALL_FLOOR_S`),
it is treated as a last resort until it answers again or its requests end.
"""

from __future__ import annotations

from app.keys.model import KeyStatus

STALL_FLOOR_S = 0.5
STALL_FACTOR = 4.0


def stall_threshold(typical_s: float) -> float:
    return max(STALL_FLOOR_S, STALL_FACTOR * typical_s)


def is_stalled(status: KeyStatus, now: float, pool_latency_s: float | None) -> bool:
    """`pool_latency_s` stands in for a key that never answered (a key hanging from the start).

    With no latency known anywhere nothing is judged: a cold start is not a hang.
    """
    if status.in_flight == 0 or status.quiet_since is None:
        return False
    typical = status.latency_ewma if status.latency_ewma is not None else pool_latency_s
    if typical is None:
        return False
    return now - status.quiet_since > stall_threshold(typical)
