"""Alerts: dedupe per (type, subject) within the cooldown, health falls, never blocking."""

from __future__ import annotations

import logging

import pytest

from app.observability.alerts import AlertDeduper, Alerts, HealthWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class TestDeduper:
    def test_one_per_subject_per_cooldown(self):
        dedupe = AlertDeduper(300)
        assert dedupe.admit("circuit_open", "alpha", 0)
        assert not dedupe.admit("circuit_open", "alpha", 299)
        assert dedupe.admit("circuit_open", "beta", 299)
        assert dedupe.admit("provider_exhausted", "alpha", 299)
        assert dedupe.admit("circuit_open", "alpha", 300)


class TestAlerts:
    def test_emit_logs_a_warning_and_dedupes(self, caplog: pytest.LogCaptureFixture):
        clock = Clock()
        alerts = Alerts(None, cooldown_s=60, clock=clock)
        with caplog.at_level(logging.WARNING, "keypool.alerts"):
            assert alerts.emit("circuit_open", "critical", "breaker open", provider="alpha")
            assert not alerts.emit("circuit_open", "critical", "breaker open", provider="alpha")
            clock.now += 61
            assert alerts.emit("circuit_open", "critical", "breaker open", provider="alpha")
        assert [r.message for r in caplog.records].count(
            "alert circuit_open (critical): breaker open"
        ) == 2

    def test_budget_alerts_are_per_user(self):
        alerts = Alerts(None, clock=Clock())
        assert alerts.emit("budget_warning", "warning", "80%", user_id="u1")
        assert alerts.emit("budget_warning", "warning", "80%", user_id="u2")
        assert not alerts.emit("budget_warning", "warning", "80%", user_id="u1")

    def test_unknown_type_is_a_bug(self):
        with pytest.raises(ValueError, match="unknown alert type"):
            Alerts(None).emit("disk_full", "warning", "x")

    def test_body_shape(self):
        clock = Clock()
        clock.now = 0.0
        alerts = Alerts("http://127.0.0.1:9/hook", clock=clock)
        alerts.emit("quota_exceeded", "critical", "key out of quota", provider="alpha")
        alert = alerts._queue.get_nowait()
        assert alert.as_dict() == {
            "type": "quota_exceeded",
            "severity": "critical",
            "message": "key out of quota",
            "provider": "alpha",
            "at": "1970-01-01T00:00:00Z",
        }

    def test_a_full_queue_drops_and_counts_instead_of_waiting(self):
        alerts = Alerts("http://127.0.0.1:9/hook", clock=Clock(), queue_size=1)
        alerts.emit("budget_exceeded", "warning", "x", user_id="a")
        alerts.emit("budget_exceeded", "warning", "x", user_id="b")
        assert alerts.dropped == 1


class TestHealthWatcher:
    @pytest.mark.parametrize(
        ("statuses", "alerts_sent"),
        [
            (["EXCELLENT", "GOOD", "EXCELLENT"], 0),
            (["EXCELLENT", "DEGRADED", "DEGRADED"], 1),
            (["GOOD", "DEGRADED", "CRITICAL"], 2),
            (["CRITICAL", "DEGRADED"], 1),  # getting better is not a fall
            (["DEGRADED", "GOOD", "DEGRADED"], 1),  # the second fall is within the cooldown
        ],
    )
    def test_falls_raise_health_degraded(self, statuses: list[str], alerts_sent: int):
        alerts = Alerts(None, clock=Clock())
        watcher = HealthWatcher(alerts)
        for status in statuses:
            watcher.observe(status)
        assert alerts.emitted.get("health_degraded", 0) == alerts_sent
