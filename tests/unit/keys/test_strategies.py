"""Selection strategies through the pool: properties that hold for any pool state."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.keys.model import Ask, KeyState, KeyStatus
from app.keys.pool import KeyPool
from app.keys.strategies import LeastBusy, make_strategy

NOW = 10_000.0
NAMES = ["round_robin", "random", "weighted", "least_busy"]


@st.composite
def key_statuses(draw: st.DrawFn) -> KeyStatus:
    state = draw(st.sampled_from(list(KeyState)))
    cooldown = draw(st.one_of(st.none(), st.floats(min_value=NOW - 5, max_value=NOW + 5)))
    return KeyStatus(
        state=state,
        cooldown_until=cooldown if state is KeyState.RATE_LIMITED else None,
        in_flight=draw(st.integers(min_value=0, max_value=5)),
        health_factor=draw(st.floats(min_value=0.05, max_value=1.0)),
    )


def pool_of(name: str, statuses: list[KeyStatus], weights: list[float] | None = None) -> KeyPool:
    pool = KeyPool(len(statuses), make_strategy(name, weights or [1.0] * len(statuses)))
    pool.statuses = statuses
    return pool


class TestEveryStrategy:
    @pytest.mark.parametrize("name", NAMES)
    @settings(max_examples=150, deadline=None)
    @given(statuses=st.lists(key_statuses(), min_size=1, max_size=8), seed=st.integers())
    def test_never_picks_an_unusable_key_while_a_usable_one_exists(
        self, name: str, statuses: list[KeyStatus], seed: int
    ):
        usable = {i for i, s in enumerate(statuses) if s.usable(NOW)}
        pool = pool_of(name, statuses)
        grant = pool.choose(NOW, random.Random(seed), Ask())
        if usable:
            assert grant.index in usable
        else:
            assert grant.index is None

    @pytest.mark.parametrize("name", NAMES)
    @settings(max_examples=100, deadline=None)
    @given(
        statuses=st.lists(key_statuses(), min_size=2, max_size=8),
        exclude=st.sets(st.integers(min_value=0, max_value=7)),
        seed=st.integers(),
    )
    def test_never_picks_an_excluded_key(
        self, name: str, statuses: list[KeyStatus], exclude: set[int], seed: int
    ):
        grant = pool_of(name, statuses).choose(NOW, random.Random(seed), Ask(exclude=exclude))
        assert grant.index not in exclude

    @pytest.mark.parametrize("name", NAMES)
    def test_a_disabled_key_gets_nothing(self, name: str):
        statuses = [KeyStatus(), KeyStatus(state=KeyState.DISABLED), KeyStatus()]
        pool = pool_of(name, statuses)
        rng = random.Random(1)
        picks = Counter(pool.choose(NOW, rng, Ask()).index for _ in range(300))
        assert picks[1] == 0
        assert picks[0] > 0
        assert picks[2] > 0


class TestRoundRobin:
    def test_3000_concurrent_requests_on_3_keys_are_1000_each(self):
        pool = pool_of("round_robin", [KeyStatus() for _ in range(3)])
        rng = random.Random(0)
        picks = Counter(pool.choose(NOW, rng, Ask()).index for _ in range(3000))
        assert picks == {0: 1000, 1: 1000, 2: 1000}

    @settings(max_examples=100, deadline=None)
    @given(keys=st.integers(min_value=1, max_value=12), requests=st.integers(0, 500))
    def test_load_is_even_within_one(self, keys: int, requests: int):
        pool = pool_of("round_robin", [KeyStatus() for _ in range(keys)])
        rng = random.Random(0)
        picks = Counter(pool.choose(NOW, rng, Ask()).index for _ in range(requests))
        counts = [picks[i] for i in range(keys)]
        assert max(counts) - min(counts) <= 1

    def test_a_skipped_key_does_not_give_its_neighbour_two_turns(self):
        statuses = [KeyStatus() for _ in range(4)]
        statuses[1] = KeyStatus(state=KeyState.FAILED)
        pool = pool_of("round_robin", statuses)
        rng = random.Random(0)
        picks = Counter(pool.choose(NOW, rng, Ask()).index for _ in range(300))
        assert picks == {0: 100, 2: 100, 3: 100}


class TestWeighted:
    @settings(max_examples=100, deadline=None)
    @given(
        weights=st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=2, max_size=6),
        seed=st.integers(),
    )
    def test_a_zero_weight_key_is_chosen_only_when_no_weighted_key_can_serve(
        self, weights: list[float], seed: int
    ):
        pool = pool_of("weighted", [KeyStatus() for _ in weights], weights)
        rng = random.Random(seed)
        picks = {pool.choose(NOW, rng, Ask()).index for _ in range(50)}
        if any(w > 0 for w in weights):
            assert all(weights[i] > 0 for i in picks if i is not None)

    def test_traffic_follows_the_weights(self):
        pool = pool_of("weighted", [KeyStatus(), KeyStatus()], [1.0, 3.0])
        rng = random.Random(7)
        picks = Counter(pool.choose(NOW, rng, Ask()).index for _ in range(4000))
        assert 0.70 < picks[1] / 4000 < 0.80

    def test_failures_lower_a_key_and_successes_restore_it(self):
        from app.keys.model import NO_SIGNAL, Outcome

        pool = pool_of("weighted", [KeyStatus(), KeyStatus()])
        for _ in range(2):
            pool.statuses[0].in_flight += 1
            pool.release(0, Outcome.SERVER_ERROR, NOW, NO_SIGNAL)
        rng = random.Random(3)
        lowered = Counter(pool.choose(NOW, rng, Ask()).index for _ in range(2000))
        assert lowered[0] < 0.3 * 2000
        for _ in range(2):
            pool.statuses[0].in_flight += 1
            pool.release(0, Outcome.OK, NOW, NO_SIGNAL)
        restored = Counter(pool.choose(NOW, rng, Ask()).index for _ in range(2000))
        assert 0.4 * 2000 < restored[0] < 0.6 * 2000


class TestLeastBusy:
    @settings(max_examples=150, deadline=None)
    @given(in_flight=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=8))
    def test_picks_a_key_with_the_fewest_requests_in_flight(self, in_flight: list[int]):
        pool = pool_of("least_busy", [KeyStatus(in_flight=n) for n in in_flight])
        grant = pool.choose(NOW, random.Random(0), Ask())
        assert grant.index is not None
        assert in_flight[grant.index] == min(in_flight)

    def test_spreads_concurrent_requests(self):
        pool = KeyPool(3, LeastBusy())
        picks = Counter(pool.choose(NOW, random.Random(0), Ask()).index for _ in range(9))
        assert picks == {0: 3, 1: 3, 2: 3}


class TestPreferences:
    @pytest.mark.parametrize("name", NAMES)
    def test_the_users_key_goes_first_when_it_is_usable(self, name: str):
        pool = pool_of(name, [KeyStatus() for _ in range(4)])
        assert pool.choose(NOW, random.Random(0), Ask(preferred=2)).index == 2

    @pytest.mark.parametrize("name", NAMES)
    def test_batch_siblings_keys_come_last(self, name: str):
        pool = pool_of(name, [KeyStatus() for _ in range(3)])
        grant = pool.choose(NOW, random.Random(0), Ask(avoid={0: 1, 2: 1}))
        assert grant.index == 1
