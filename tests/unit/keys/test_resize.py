"""A key list that changes while serving (key vault): state follows its key, not its position."""

from __future__ import annotations

import random

import pytest

from app.keys.model import Ask, KeyState, Outcome, RateLimitSignal
from app.keys.pool import KeyPool
from app.keys.renumber import Renumbering, follow
from app.keys.strategies import RoundRobin, Weighted

NOW = 1_000.0
RNG = random.Random(0)


def cooled(size: int, index: int) -> KeyPool:
    pool = KeyPool(size, RoundRobin())
    assert pool.acquire(NOW, RNG, Ask(preferred=index)).index == index
    pool.release(index, Outcome.RATE_LIMITED, NOW, RateLimitSignal(retry_after_s=60))
    return pool


class TestKeyPoolResize:
    def test_deleting_an_earlier_key_moves_a_later_keys_cooldown_with_it(self):
        pool = cooled(4, 3)
        pool.resize((0, 1, 3))  # the key at 2 was deleted; the one at 3 is now at 2
        assert len(pool) == 3
        assert pool.statuses[2].state is KeyState.RATE_LIMITED
        assert pool.statuses[2].requests == 1
        assert all(pool.statuses[i].state is KeyState.ACTIVE for i in (0, 1))
        chosen = {pool.acquire(NOW + 1, RNG, Ask()).index for _ in range(4)}
        assert chosen == {0, 1}  # the cooling key stays out of rotation at its new place

    def test_a_new_key_starts_fresh_and_is_served(self):
        pool = cooled(2, 0)
        pool.resize((0, 1, None))
        assert pool.statuses[2].requests == 0
        assert pool.statuses[0].state is KeyState.RATE_LIMITED
        assert {pool.acquire(NOW + 1, RNG, Ask()).index for _ in range(4)} == {1, 2}

    def test_the_breaker_stays_and_the_cursor_stays_in_range(self):
        pool = KeyPool(3, RoundRobin())
        pool.cursor = 2
        pool.breaker.failures = 2
        pool.resize((0, 1))
        assert (pool.cursor, pool.breaker.failures) == (0, 2)

    def test_weighted_weights_are_rebuilt_for_the_new_list(self):
        pool = KeyPool(2, Weighted((5.0, 1.0)))
        pool.resize((1, None), weights=(1.0, 1.0))
        assert isinstance(pool.strategy, Weighted)
        assert pool.strategy.weights == (1.0, 1.0)


class TestRenumbering:
    def test_follow_finds_the_keys_new_place_or_none(self):
        assert follow(3, (0, 1, 3)) == 2
        assert follow(2, (0, 1, 3)) is None
        assert follow(0, (None, 0)) == 1

    def test_an_index_granted_generations_ago_is_followed_through_every_change(self):
        layouts = Renumbering()
        granted_at = layouts.generation("p")
        layouts.record("p", (0, 1, 2, None))  # a key added at 3
        layouts.record("p", (0, 2, 3))  # the key at 1 deleted
        assert layouts.generation("p") == 2
        assert layouts.translate("p", 2, granted_at) == 1
        assert layouts.translate("p", 1, granted_at) is None
        assert layouts.translate("p", 3, 1) == 2
        assert layouts.translate("other", 5, 0) == 5


class TestAccountLimitAcrossResize:
    def test_a_learned_account_limit_is_split_by_the_new_key_count(self):
        pool = KeyPool(2, RoundRobin(), shared_limit="true")
        signal = RateLimitSignal(limit_requests=60, remaining_requests=59, reset_requests_s=60.0)
        assert pool.acquire(NOW, RNG, Ask(preferred=0)).index == 0
        pool.release(0, Outcome.OK, NOW, signal)  # learns the account's 60 requests a minute
        before = pool._pace(pool.statuses[0]).request_interval
        pool.resize((0, 1, None))  # a third key joins the same account
        after = pool._pace(pool.statuses[0]).request_interval
        assert pool.statuses[0].learned_requests == 60  # learned limits moved with the key
        assert after == pytest.approx(before * 3 / 2)  # 1/3 of the account per key, not 1/2

    def test_the_last_429_stays_with_its_key_when_keys_move(self):
        pool = KeyPool(3, RoundRobin())
        assert pool.shared.observe(2, NOW, NOW + 30) is None
        pool.resize((1, 2))  # key 0 deleted: the limited key is now at 1
        # A second 429 from that same key says nothing about the account ...
        assert pool.shared.observe(1, NOW + 0.5, NOW + 30) is None
        # ... one from another key within the window does.
        assert pool.shared.observe(0, NOW + 0.6, NOW + 30) is not None
