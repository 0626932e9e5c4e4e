"""Unit tests of the fake provider's pure parts: rate windows, headers, body parsing, config."""

from __future__ import annotations

import orjson
import pytest

from app.demo.fake import bodies
from app.demo.fake.config import FakeProviderConfig, KeyBehaviour, config_from_dict, demo_config
from app.demo.fake.limits import (
    UNLIMITED_REQUESTS,
    KeyLimiter,
    SlidingWindow,
    format_duration,
    rate_headers,
    retry_headers,
)
from app.demo.fake_provider import build_config, build_parser


class TestSlidingWindow:
    def test_never_admits_more_than_limit_in_any_period(self) -> None:
        window = SlidingWindow(2, 1.0)
        window.add(0.0)
        window.add(0.5)
        assert window.remaining(0.99) == 0
        assert window.reset_after(0.9) == pytest.approx(0.1)
        assert window.remaining(1.0) == 1  # the request at t=0 left the window at t=1
        assert window.remaining(1.5) == 2

    def test_fractional_rate_stretches_the_period(self) -> None:
        window = SlidingWindow(0.5, 1.0)
        assert (window.limit, window.period) == (1, 2.0)

    def test_empty_window_resets_now(self) -> None:
        assert SlidingWindow(5, 60.0).reset_after(10.0) == 0.0


class TestKeyLimiter:
    def test_unlimited_reports_large_limit(self) -> None:
        limiter = KeyLimiter(None, None)
        assert all(limiter.try_acquire(0.0) for _ in range(100))
        assert limiter.status(0.0)[0] == UNLIMITED_REQUESTS

    def test_rejected_request_uses_no_budget(self) -> None:
        limiter = KeyLimiter(rps=None, rpm=2)
        assert limiter.try_acquire(0.0)
        assert limiter.try_acquire(1.0)
        assert not limiter.try_acquire(2.0)
        limit, remaining, reset_s = limiter.status(2.0)
        assert (limit, remaining) == (2, 0)
        assert reset_s == pytest.approx(58.0)
        assert limiter.try_acquire(60.0)

    def test_both_windows_must_have_room(self) -> None:
        limiter = KeyLimiter(rps=10, rpm=3)
        assert [limiter.try_acquire(0.0) for _ in range(4)] == [True, True, True, False]
        assert limiter.status(0.5)[:2] == (3, 0)

    def test_clear_empties_windows(self) -> None:
        limiter = KeyLimiter(rps=1, rpm=None)
        limiter.try_acquire(0.0)
        limiter.clear()
        assert limiter.try_acquire(0.1)


class TestHeaders:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0.25, "250ms"),
            (0.0004, "1ms"),
            (1.0, "1s"),
            (1.5, "1.5s"),
            (90.0, "1m30s"),
            (60, "1m0s"),
        ],
    )
    def test_format_duration(self, seconds: float, text: str) -> None:
        assert format_duration(seconds) == text

    @pytest.mark.parametrize(
        ("seconds", "after", "after_ms"),
        [(0.2, "1", "200"), (1.0, "1", "1000"), (2.01, "3", "2010")],
    )
    def test_retry_after_rounds_up_to_whole_seconds(
        self, seconds: float, after: str, after_ms: str
    ) -> None:
        assert retry_headers(seconds) == {"retry-after": after, "retry-after-ms": after_ms}

    def test_rate_headers_never_negative(self) -> None:
        headers = rate_headers(5, -1, 2.0)
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"] == "2s"
        assert int(headers["x-ratelimit-remaining-tokens"]) > 0


class TestParseChat:
    def test_counts_prompt_tokens_from_all_contents(self) -> None:
        raw = orjson.dumps(
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "x" * 10},
                    {"role": "user", "content": [{"type": "text", "text": "y" * 7}]},
                    {"role": "assistant", "content": None},
                ],
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": 3,
            }
        )
        params = bodies.parse_chat(raw)
        assert (params.model, params.stream, params.include_usage) == ("m", True, True)
        assert (params.prompt_tokens, params.max_tokens) == (4, 3)

    def test_prompt_tokens_at_least_one(self) -> None:
        raw = b'{"model": "m", "messages": [{"role": "user", "content": ""}]}'
        assert bodies.parse_chat(raw).prompt_tokens == 1

    @pytest.mark.parametrize(
        "raw",
        [
            b"{not json",
            b"[]",
            b'{"model": "m"}',
            b'{"model": "m", "messages": []}',
            b'{"messages": [{}]}',
        ],
    )
    def test_rejects_invalid_bodies(self, raw: bytes) -> None:
        with pytest.raises(bodies.BadRequest):
            bodies.parse_chat(raw)

    def test_max_tokens_truncates_with_length(self) -> None:
        assert bodies.completion_size(5, 2) == (2, "length")
        assert bodies.completion_size(5, 9) == (5, "stop")
        assert bodies.completion_size(5, None) == (5, "stop")

    def test_answer_text_is_the_chunk_words(self) -> None:
        assert bodies.answer_text(5) == "w0 w1 w2 w3 w4 "

    def test_error_body_is_openai_shaped(self) -> None:
        error = orjson.loads(bodies.error_body(404, "no"))["error"]
        assert error == {
            "message": "no",
            "type": "invalid_request_error",
            "code": "model_not_found",
            "param": None,
        }


class TestConfig:
    def test_keys_inherit_default(self) -> None:
        config = config_from_dict(
            {
                "default": {"latency_ms": 7},
                "keys": {"a": {"mode": "hang"}, "b": None},
                "models": None,
                "accept_any_key": True,
            }
        )
        assert config.keys["a"] == KeyBehaviour(mode="hang", latency_ms=7)
        assert config.keys["b"] == KeyBehaviour(latency_ms=7)
        assert config.models is None
        assert config.accept_any_key

    def test_key_list_shorthand(self) -> None:
        assert set(config_from_dict({"keys": ["a", "b"]}).keys) == {"a", "b"}

    @pytest.mark.parametrize(
        ("changes", "error"),
        [
            ({"mode": "sleepy"}, "unknown mode"),
            ({"rps": 0}, "rps must be positive"),
            ({"chunks": 0}, "chunks must be"),
            ({"colour": "red"}, "unknown KeyBehaviour fields"),
        ],
    )
    def test_rejects_bad_behaviour(self, changes: dict[str, object], error: str) -> None:
        with pytest.raises(ValueError, match=error):
            KeyBehaviour().with_changes(changes)

    def test_demo_scenario(self) -> None:
        config = demo_config()
        assert sorted(config.keys) == [f"{p}-key-{i}" for p in ("alpha", "beta") for i in range(3)]
        assert config.keys["alpha-key-1"].mode == "rate_limited"
        assert (config.keys["alpha-key-1"].retry_after_s or 0) >= 60
        assert config.keys["beta-key-1"].mode == "unauthorized"
        assert config.keys["alpha-key-0"].chunk_interval_ms > 0
        assert config.models == ["fake-small", "fake-large"]


class TestCommandLine:
    def test_shortcut_flags_apply_to_named_keys_and_default(self) -> None:
        args = build_parser().parse_args(["--keys", "k1, k2", "--rps", "20", "--models", "any"])
        config = build_config(args)
        assert config.keys == {"k1": KeyBehaviour(rps=20), "k2": KeyBehaviour(rps=20)}
        assert config.default.rps == 20
        assert config.models is None

    def test_demo_plus_override(self) -> None:
        args = build_parser().parse_args(["--demo", "--keys", "alpha-key-0", "--mode", "error_500"])
        config = build_config(args)
        assert config.keys["alpha-key-0"].mode == "error_500"
        assert config.keys["alpha-key-0"].chunks == 8
        assert config.keys["beta-key-1"].mode == "unauthorized"

    def test_empty_defaults(self) -> None:
        config = build_config(build_parser().parse_args([]))
        assert config == FakeProviderConfig()
