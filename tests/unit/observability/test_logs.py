"""JSON log lines, the request id they carry, and state changes logged once."""

from __future__ import annotations

import logging

import orjson
import pytest

from app.observability.logs import JsonFormatter, RequestIdFilter, TransitionLog, request_id_var


def record(message: str, **extra) -> logging.LogRecord:
    entry = logging.LogRecord("keypool.request", logging.INFO, __file__, 1, message, (), None)
    entry.__dict__.update(extra)
    return entry


class TestJsonFormatter:
    def test_one_object_per_line_with_extras_and_request_id(self):
        token = request_id_var.set("req-42")
        try:
            entry = record("POST /api/chat 200", route="/api/chat", status=200)
            RequestIdFilter().filter(entry)
            line = JsonFormatter().format(entry)
        finally:
            request_id_var.reset(token)
        assert "\n" not in line
        data = orjson.loads(line)
        assert data["request_id"] == "req-42"
        assert data["route"] == "/api/chat"
        assert data["status"] == 200
        assert data["level"] == "INFO"
        assert data["message"] == "POST /api/chat 200"
        assert data["time"].endswith("Z")

    def test_exceptions_carry_their_type_only(self):
        try:
            raise ValueError("sk-secret-in-message")
        except ValueError:
            import sys

            entry = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
        line = JsonFormatter().format(entry)
        assert "sk-secret" not in line
        assert orjson.loads(line)["exc_type"] == "ValueError"


class TestTransitionLog:
    def test_each_change_is_logged_once(self, caplog: pytest.LogCaptureFixture):
        log = TransitionLog()
        with caplog.at_level(logging.INFO, "keypool.state"):
            assert not log.log_transition("key", "alpha:0:abcd", "active")  # the start: not news
            assert log.log_transition("key", "alpha:0:abcd", "rate_limited")
            assert not log.log_transition("key", "alpha:0:abcd", "rate_limited")
            assert log.log_transition("key", "alpha:0:abcd", "active")
            assert log.log_transition("circuit", "alpha", "open")
            assert not log.log_transition("circuit", "alpha", "open")
        lines = [r.getMessage() for r in caplog.records]
        assert lines == [
            "key alpha:0:abcd: active -> rate_limited",
            "key alpha:0:abcd: rate_limited -> active",
            "circuit alpha: closed -> open",
        ]
        assert caplog.records[2].levelno == logging.WARNING

    def test_a_key_seen_failed_first_is_logged(self, caplog: pytest.LogCaptureFixture):
        with caplog.at_level(logging.INFO, "keypool.state"):
            assert TransitionLog().log_transition("key", "beta:1:zz", "failed", reason="401")
        assert caplog.records[0].getMessage() == "key beta:1:zz: active -> failed (401)"
