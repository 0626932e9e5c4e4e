"""From request to ChatCall: user ids from header or body, and OpenAI's `auto` model."""

from __future__ import annotations

import pytest
from starlette.requests import HTTPConnection

from app.api.calls import group_key, openai_call, user_id_of
from app.errors import InvalidRequest
from app.schemas import MAX_USER_ID_CHARS, OpenAIChatRequest


def connection(**headers: str) -> HTTPConnection:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return HTTPConnection({"type": "http", "headers": raw})


MESSAGES = [{"role": "user", "content": "hi"}]


class TestUserId:
    def test_the_header_wins_over_the_body(self):
        assert user_id_of(connection(x_user_id="from-header"), "from-body") == "from-header"
        assert user_id_of(connection(), "from-body") == "from-body"

    def test_a_header_too_long_to_store_is_refused(self):
        with pytest.raises(InvalidRequest):
            user_id_of(connection(x_user_id="u" * (MAX_USER_ID_CHARS + 1)), None)

    def test_an_openai_user_too_long_to_store_becomes_its_hash(self):
        long = "u" * (MAX_USER_ID_CHARS + 1)
        assert group_key("short") == "short"
        assert group_key(long) == group_key(long)
        assert (group_key(long) or "").startswith("sha256:")


class TestOpenAICall:
    def test_auto_takes_path_a_and_any_other_model_path_b(self):
        raw = {"model": "auto", "messages": MESSAGES}
        auto = openai_call(OpenAIChatRequest.model_validate(raw), raw, "u1")
        assert (auto.model, auto.user_id) == (None, "u1")
        named = {"model": "alpha/m", "messages": MESSAGES}
        assert openai_call(OpenAIChatRequest.model_validate(named), named, None).model == "alpha/m"
