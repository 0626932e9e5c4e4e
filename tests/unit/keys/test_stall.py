"""Hang detection: a key busy far longer than it usually answers is judged stalled."""

from __future__ import annotations

from app.keys.model import KeyStatus
from app.keys.stall import STALL_FACTOR, STALL_FLOOR_S, is_stalled, stall_threshold

T0 = 1_000.0


def busy(quiet_since: float, latency: float | None = None) -> KeyStatus:
    return KeyStatus(in_flight=1, quiet_since=quiet_since, latency_ewma=latency)


class TestStall:
    def test_the_threshold_is_a_multiple_of_the_usual_latency_with_a_floor(self):
        assert stall_threshold(1.0) == STALL_FACTOR
        assert stall_threshold(0.01) == STALL_FLOOR_S

    def test_a_key_quiet_past_the_threshold_is_stalled(self):
        status = busy(T0, latency=0.5)
        assert not is_stalled(status, T0 + 1.9, None)
        assert is_stalled(status, T0 + 2.1, None)

    def test_a_key_that_never_answered_is_judged_by_the_pool_latency(self):
        assert is_stalled(busy(T0), T0 + 5, pool_latency_s=1.0)
        assert not is_stalled(busy(T0), T0 + 3, pool_latency_s=1.0)

    def test_a_cold_start_is_not_a_hang(self):
        assert not is_stalled(busy(T0), T0 + 1000, None)

    def test_an_idle_key_is_never_stalled(self):
        status = KeyStatus(in_flight=0, quiet_since=T0, latency_ewma=0.1)
        assert not is_stalled(status, T0 + 1000, 0.1)
