"""The admin health view's status and capacity estimate, from the share of active keys."""

from __future__ import annotations

import pytest

from app.keys.health import estimate_capacity, pool_status, status_message


class TestStatus:
    @pytest.mark.parametrize(
        ("active", "total", "status"),
        [
            (10, 10, "EXCELLENT"),
            (9, 10, "EXCELLENT"),
            (8, 10, "GOOD"),
            (7, 10, "GOOD"),
            (4, 10, "DEGRADED"),
            (3, 10, "CRITICAL"),
            (0, 0, "CRITICAL"),
        ],
    )
    def test_the_status_follows_the_share_of_active_keys(
        self, active: int, total: int, status: str
    ):
        assert pool_status(active, total) == status

    def test_the_message_names_the_counts(self):
        assert "3/10" in status_message("CRITICAL", 3, 10)


class TestCapacity:
    def test_capacity_sums_each_providers_active_keys_times_their_rpm(self):
        capacity = estimate_capacity([(2, 30), (1, 60)])
        assert capacity.requests_per_day == 120 * 60 * 24
        assert capacity.concurrent_users == 60
        assert capacity.daily_users == 120 * 60 * 24 // 20

    def test_a_provider_without_a_published_rpm_counts_the_default(self):
        assert estimate_capacity([(1, None)]) == estimate_capacity([(1, 30)])

    def test_no_active_key_is_no_capacity(self):
        assert estimate_capacity([(0, 30)]).requests_per_day == 0
