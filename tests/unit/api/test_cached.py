"""The cost header's form, and the cache switch never travelling upstream."""

from __future__ import annotations

from app.api.cached import cost_text
from app.schemas import ChatRequest, OpenAIChatRequest


def test_cost_header_is_a_plain_decimal():
    assert cost_text(0.0) == "0"
    assert cost_text(0.000012) == "0.000012"
    assert cost_text(1.5) == "1.5"
    assert cost_text(1e-11) == "0"  # below the header's precision


def test_the_cache_switch_is_never_sent_upstream():
    raw = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "cache": False}
    body = OpenAIChatRequest.model_validate(raw)
    assert body.cache is False
    assert "cache" not in body.upstream_params(raw)
    assert "cache" not in body.upstream_params()
    chat = ChatRequest.model_validate({"messages": raw["messages"], "cache": True})
    assert chat.cache is True
    assert "cache" not in chat.upstream_params()
