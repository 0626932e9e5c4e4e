"""The pacer with a burst (Pace.burst): an idle key starts several requests at once, then spaces
them so that no 60-s window ever holds more than the key's rpm (injected clock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.keys.burst import BurstPace
from app.keys.learned import pace_of
from app.keys.model import KeyStatus
from app.keys.pacing import REQUEST_HEADROOM, Pace, slot_at, take

T0 = 1_000.0


def send(status: KeyStatus, pace: Pace, now: float) -> float:
    at = slot_at(status, pace, 1, now)
    take(status, pace, 1, at)
    return at


def most_in_any_window(starts: list[float], window: float = 60.0) -> int:
    starts, most, first = sorted(starts), 0, 0
    for last, start in enumerate(starts):
        while start - starts[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_an_idle_key_starts_its_burst_at_once_then_spreads():
    pace, status = Pace(rpm=30, burst=5), KeyStatus()
    starts = [send(status, pace, T0) for _ in range(7)]
    gap = 60 / 26 * (1 + REQUEST_HEADROOM)
    assert starts[:5] == pytest.approx([T0] * 5)
    assert starts[5:] == pytest.approx([T0 + gap, T0 + 2 * gap])


def test_the_burst_refills_while_the_key_idles():
    pace, status = Pace(rpm=30, burst=3), KeyStatus()
    for _ in range(3):
        send(status, pace, T0)
    later = T0 + 3 * pace.request_interval
    assert [send(status, pace, later) for _ in range(3)] == pytest.approx([later] * 3)


def test_a_burst_of_one_is_the_plain_spaced_pacer():
    pace = Pace(rpm=60)
    assert pace.request_tolerance == 0.0
    assert pace.request_interval == pytest.approx(1.0 * (1 + REQUEST_HEADROOM))
    status = KeyStatus()
    assert [send(status, pace, T0) for _ in range(2)] == pytest.approx(
        [T0, T0 + pace.request_interval]
    )


def test_the_burst_matches_burst_py_and_survives_a_process_share():
    pace = Pace(rpm=120, burst=12).shared_by(3)
    reference = BurstPace(120, 12, 3)
    assert pace.request_interval == pytest.approx(reference.interval)
    assert pace.request_tolerance == pytest.approx(reference.tolerance)


def test_a_learned_rate_is_spaced_but_a_configured_one_keeps_its_burst():
    learned = KeyStatus(learned_requests=60, learned_requests_window=60.0)
    assert pace_of(Pace(burst=5), learned).request_tolerance == 0.0
    tokens_learned = KeyStatus(learned_tokens=60_000, learned_tokens_window=60.0)
    kept = pace_of(Pace(rpm=30, burst=5), tokens_learned)
    assert (kept.tpm, kept.burst) == (60_000, 5)


asks = st.lists(st.floats(0, 400, allow_nan=False), min_size=1, max_size=300).map(
    lambda xs: [T0 + x for x in sorted(xs)]
)


@settings(max_examples=300)
@given(rpm=st.integers(1, 200), burst=st.integers(1, 40), share=st.integers(1, 3), asks=asks)
def test_never_more_than_rpm_in_any_60_s_window(rpm, burst, share, asks):
    if rpm < share:
        return  # each process needs at least one request of the budget
    pace = Pace(rpm=rpm, burst=burst).shared_by(share)
    processes = [KeyStatus() for _ in range(share)]
    starts = [send(status, pace, now) for status in processes for now in asks]
    assert most_in_any_window(starts) <= rpm


@settings(max_examples=300)
@given(
    rpm=st.integers(1, 200),
    burst=st.integers(1, 40),
    asks=asks,
    slips=st.lists(st.floats(0, 1), min_size=300, max_size=300),
)
def test_starts_that_slip_within_the_allowance_keep_every_window_within_rpm(
    rpm, burst, asks, slips
):
    # A booked turn told "0 left, back in a moment" keeps its slot and starts up to
    # Pace.request_slip late (KeyPool.recheck): the headroom pays for it.
    pace, status = Pace(rpm=rpm, burst=burst), KeyStatus()
    slipped = zip(asks, slips[: len(asks)], strict=True)
    starts = [send(status, pace, now) + slip * pace.request_slip for now, slip in slipped]
    assert most_in_any_window(starts) <= rpm


def test_the_slip_allowance_is_the_headroom_of_a_minute_and_none_with_a_token_budget():
    assert Pace(rpm=1200).request_slip == pytest.approx(60 * REQUEST_HEADROOM)
    assert Pace(rpm=1200, tpm=10_000).request_slip == 0.0
    assert Pace().request_slip == 0.0
