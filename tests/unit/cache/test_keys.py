"""Cache keys cover every answer-changing field, never credentials, and isolate users."""

from __future__ import annotations

from typing import Any

import pytest

from app.cache.keys import cache_key, cache_scope

MESSAGES = [{"role": "user", "content": "hi"}]
BASE: dict[str, Any] = {
    "family": "chat",
    "route": "B",
    "provider": "groq",
    "model": "llama",
    "params": {"messages": MESSAGES, "temperature": 0},
    "scope": "user:alice",
}


def key(**changes: Any) -> str:
    return cache_key(**{**BASE, **changes})


def with_params(**changes: Any) -> str:
    return key(params={**BASE["params"], **changes})


class TestCacheKey:
    def test_same_request_same_key_whatever_the_field_order(self):
        reordered = {"temperature": 0, "messages": MESSAGES}
        assert key() == key(params=reordered)
        assert len(key()) == 64

    @pytest.mark.parametrize(
        "changes",
        [
            {"family": "openai"},
            {"route": "A"},
            {"provider": "openai"},
            {"model": "other"},
            {"scope": "user:bob"},
            {"params": {"messages": [{"role": "user", "content": "hello"}], "temperature": 0}},
        ],
    )
    def test_routing_messages_and_scope_change_the_key(self, changes: dict[str, Any]):
        assert key(**changes) != key()

    @pytest.mark.parametrize(
        "field",
        [
            {"temperature": 0.5},
            {"top_p": 0.9},
            {"max_tokens": 10},
            {"stop": ["\n"]},
            {"seed": 1},
            {"n": 2},
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            {"tool_choice": "auto"},
            {"response_format": {"type": "json_object"}},
            {"presence_penalty": 1},
            {"logit_bias": {"50256": -100}},
        ],
    )
    def test_every_sampling_parameter_changes_the_key(self, field: dict[str, Any]):
        assert with_params(**field) != key()

    @pytest.mark.parametrize(
        "field", [{"stream": False}, {"user": "someone"}, {"cache": True}, {"fallback": False}]
    )
    def test_fields_that_do_not_change_the_answer_are_left_out(self, field: dict[str, Any]):
        assert with_params(**field) == key()

    def test_no_credential_reaches_the_key(self):
        # Credentials are headers, never params: the key is a pure function of the fields above.
        assert key() == cache_key(**BASE)


class TestScope:
    def test_user_scope_separates_users_and_pools_anonymous_requests(self):
        assert cache_scope("user", "alice") != cache_scope("user", "bob")
        assert cache_scope("user", None) == cache_scope("user", None) == "anonymous"

    def test_global_scope_is_shared(self):
        assert cache_scope("global", "alice") == cache_scope("global", "bob") == "global"

    def test_bring_your_own_key_is_always_the_users_scope(self):
        assert cache_scope("global", "alice", byok=True) == "user:alice"
