"""Observability.attempt_settled: the one call the settlement hook makes per attempt."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.config import load_settings
from app.metrics import Metrics
from app.observability.hub import Observability
from app.observability.record import accepted_request_id


def _registry(hub: Observability) -> CollectorRegistry:
    hub.flush()  # what is batched, and the batch's sums, reach prometheus-client
    assert hub.metrics is not None
    return hub.metrics.registry


def hub() -> Observability:
    env = {"ALPHA_API_KEYS": "k-0000000000000000", "ALPHA_BASE_URL": "http://x/v1",
           "ALPHA_DEFAULT_MODEL": "m"}  # fmt: skip
    return Observability(load_settings(env).providers, Metrics(), alert_cooldown_s=300)


def test_state_changes_and_alerts(caplog: pytest.LogCaptureFixture):
    observability = hub()
    with caplog.at_level(logging.INFO):
        observability.attempt_settled("alpha", "alpha:0:0000", key_state="active")
        observability.attempt_settled("alpha", "alpha:0:0000", key_state="failed", reason="401")
        observability.attempt_settled("alpha", "alpha:0:0000", key_state="failed")
        observability.attempt_settled("alpha", "alpha:0:0000", circuit="open")
        observability.attempt_settled("alpha", "alpha:0:0000", circuit="open")
        observability.attempt_settled("alpha", "alpha:0:0000", quota_exceeded=True)
    text = generate_latest(_registry(observability)).decode()
    assert observability.alerts.emitted == {"circuit_open": 1, "quota_exceeded": 1}
    state_lines = [r.getMessage() for r in caplog.records if r.name == "keypool.state"]
    assert state_lines == [
        "key alpha:0:0000: active -> failed (401)",
        "circuit alpha: closed -> open",
    ]
    assert 'keypool_alerts_total{type="circuit_open"} 1.0' in text


def test_an_attempt_without_states_records_nothing(caplog: pytest.LogCaptureFixture):
    observability = hub()
    with caplog.at_level(logging.INFO):
        observability.attempt_settled("alpha", "alpha:0:0000", reason="ok")
    observability.flush()
    assert observability.deferred.batches == 0
    assert not [r for r in caplog.records if r.name == "keypool.state"]
    assert observability.alerts.emitted == {}


def test_fingerprints_for_the_log_line():
    observability = hub()
    assert observability.fingerprint("alpha", "0") == "alpha:0:0000"
    assert observability.fingerprint("alpha", "7") == "alpha:7"  # a vault key added later


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"abc-123", "abc-123"),
        (b"x" * 128, "x" * 128),
        (b"x" * 129, None),
        (b"", None),
        (b"bad\x00id", None),
        (b"caf\xc3\xa9", None),
    ],
)
def test_request_ids_accepted(sent: bytes, kept: str | None):
    assert accepted_request_id(sent) == kept


def test_provider_and_budget_alerts_are_deduplicated_per_subject():
    observability = hub()
    for _ in range(3):
        observability.provider_exhausted("alpha")
        observability.budget_warning("ann", 0.81, 1.0)
        observability.budget_exceeded("ann", 1.01, 1.0)
    observability.budget_warning("bob", 0.9, 1.0)
    assert observability.alerts.emitted == {
        "provider_exhausted": 1,
        "budget_warning": 2,
        "budget_exceeded": 1,
    }
