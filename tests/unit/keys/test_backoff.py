"""Waiting bounds: the deadline, the pacing queue bound, and full-jitter backoff."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from app.keys.backoff import WaitPolicy, full_jitter


class TestFullJitter:
    @given(attempt=st.integers(min_value=0, max_value=100), seed=st.integers())
    def test_stays_between_zero_and_the_capped_exponential(self, attempt: int, seed: int):
        delay = full_jitter(attempt, random.Random(seed), base_s=0.05, cap_s=0.5)
        assert 0.0 <= delay <= min(0.5, 0.05 * 2**attempt)

    def test_grows_with_each_wait(self):
        rng = random.Random(1)
        means = [
            sum(full_jitter(n, rng, base_s=0.01, cap_s=10) for _ in range(2000)) / 2000
            for n in range(4)
        ]
        assert means == sorted(means)
        assert means[3] > 6 * means[0]

    def test_spreads_rather_than_synchronises(self):
        rng = random.Random(2)
        delays = {round(full_jitter(3, rng, base_s=0.05, cap_s=0.5), 3) for _ in range(100)}
        assert len(delays) > 50


class TestBounds:
    def test_cooldowns_may_use_the_rest_of_the_deadline_pacing_only_the_queue_bound(self):
        assert WaitPolicy(deadline_s=30, queue_s=1.0).bounds(12.0) == (12.0, 1.0)

    def test_nothing_left_means_no_waiting(self):
        assert WaitPolicy(queue_s=1.0).bounds(-3.0) == (0.0, 0.0)
        assert WaitPolicy(queue_s=1.0).bounds(0.4) == (0.4, 0.4)
