"""The fake provider's shared-bucket (account-wide limit) mode: its pure parts."""

from __future__ import annotations

import pytest

from app.demo.fake.config import FakeProviderConfig, KeyBehaviour, config_from_dict
from app.demo.fake.limits import KeyLimiter, full_limiter, tightest_status
from app.demo.fake.state import FakeProviderState
from app.demo.fake_provider import build_config, build_parser


class TestFullLimiter:
    def test_a_request_takes_from_every_limiter_or_none(self) -> None:
        shared, own = KeyLimiter(None, 2), KeyLimiter(None, 1)
        assert full_limiter((shared, own), 0.0) is None
        assert (shared.status(0.0)[1], own.status(0.0)[1]) == (1, 0)
        assert full_limiter((shared, own), 0.1) is own
        assert shared.status(0.1)[1] == 1  # a refused request uses none of the account

    def test_an_empty_account_refuses_every_key_with_its_own_reset(self) -> None:
        state = FakeProviderState(
            FakeProviderConfig(keys={"a": KeyBehaviour(), "b": KeyBehaviour()}, shared_rpm=2)
        )
        a, b = state.keys["a"], state.keys["b"]
        assert full_limiter(a.limiters, 0.0) is None
        assert full_limiter(b.limiters, 5.0) is None
        assert full_limiter(a.limiters, 6.0) is state.shared
        assert full_limiter(b.limiters, 6.0) is state.shared
        # both keys announce the same account reset: 60 s after the first request
        assert tightest_status(a.limiters, 6.0) == tightest_status(b.limiters, 6.0) == (2, 0, 54.0)
        assert full_limiter(b.limiters, 60.5) is None

    def test_reset_empties_the_shared_bucket(self) -> None:
        state = FakeProviderState(FakeProviderConfig(keys={"a": KeyBehaviour()}, shared_rps=1))
        assert full_limiter(state.keys["a"].limiters, 0.0) is None
        state.reset()
        assert full_limiter(state.keys["a"].limiters, 0.0) is None

    def test_without_a_shared_bucket_keys_are_independent(self) -> None:
        state = FakeProviderState(FakeProviderConfig(keys={"a": KeyBehaviour(rpm=1)}))
        assert state.shared is None
        assert state.keys["a"].limiters == (state.keys["a"].limiter,)


class TestSharedConfig:
    def test_from_dict_and_flags(self) -> None:
        assert config_from_dict({"keys": ["a"], "shared_rpm": 30}).shared_rpm == 30.0
        args = build_parser().parse_args(["--keys", "a,b", "--shared-rps", "2"])
        assert build_config(args).shared_rps == 2.0

    def test_non_positive_shared_limit_is_refused(self) -> None:
        with pytest.raises(ValueError, match="shared_rpm"):
            FakeProviderConfig(shared_rpm=0)
