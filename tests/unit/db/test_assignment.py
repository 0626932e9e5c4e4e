"""Least-loaded choice, rebalance planning and the LRU cache, without a database."""

from __future__ import annotations

from collections import Counter

import pytest

from app.db.assignment import LruCache, least_loaded, plan_rebalance


class TestLeastLoaded:
    @pytest.mark.parametrize(
        ("sizes", "groups", "expected"),
        [
            ({}, 3, 1),
            ({1: 2, 2: 1, 3: 1}, 3, 2),
            ({1: 1, 2: 1, 3: 0}, 3, 3),
            ({1: 5, 2: 5, 9: 0}, 2, 1),  # groups above G are never chosen
        ],
    )
    def test_picks_the_smallest_group_lowest_number_first(self, sizes, groups, expected):
        assert least_loaded(sizes, groups) == expected


class TestPlanRebalance:
    def test_moves_the_newest_members_of_big_groups_to_small_ones(self):
        users = [("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 2)]

        plan = plan_rebalance(users, 3)

        assert plan.moves == {"c": 2, "d": 3}
        assert plan.sizes == {1: 2, 2: 2, 3: 1}

    def test_gives_the_extra_seats_to_the_largest_groups(self):
        users = [("a", 2), ("b", 2), ("c", 3), ("d", 3), ("e", 1)]

        plan = plan_rebalance(users, 3)

        assert plan.moves == {}
        assert plan.sizes == {1: 1, 2: 2, 3: 2}

    def test_users_of_groups_above_g_always_move(self):
        plan = plan_rebalance([("a", 1), ("b", 7), ("c", 0)], 3)

        assert plan.moves == {"b": 2, "c": 3}

    def test_result_is_balanced_and_moves_the_minimum(self):
        users = [(f"u{i}", 1 + (i * i) % 7) for i in range(101)]

        plan = plan_rebalance(users, 5)

        final = {u: plan.moves.get(u, g) for u, g in users}
        sizes = Counter(final.values())
        assert sizes == plan.sizes
        assert max(sizes.values()) - min(sizes.values()) <= 1
        before = Counter(g for _, g in users)
        outside = sum(n for g, n in before.items() if g > 5)
        overflow = sum(max(0, before[g] - plan.sizes[g]) for g in range(1, 6))
        assert len(plan.moves) == outside + overflow

    def test_nobody_moves_when_already_even(self):
        assert plan_rebalance([("a", 1), ("b", 2)], 2).moves == {}


class TestLruCache:
    def test_forgets_the_least_recently_used_entry(self):
        cache: LruCache[str, int] = LruCache(2)
        cache.put("a", 1)
        cache.put("b", 2)
        assert cache.get("a") == 1  # "a" becomes recent

        cache.put("c", 3)

        assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
        assert len(cache) == 2

    def test_replace_if_present_never_adds(self):
        cache: LruCache[str, int] = LruCache(2)
        cache.put("a", 1)

        cache.replace_if_present("a", 5)
        cache.replace_if_present("z", 9)

        assert (cache.get("a"), cache.get("z")) == (5, None)
