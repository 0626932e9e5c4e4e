"""ChatService over an answering transport: routes, usage, fallback and the blocking entry points."""

from __future__ import annotations

from typing import Any

import pytest

from app.chat.service import ChatCall, ChatService
from app.errors import AllProvidersFailed, UnknownProvider
from app.keys.backoff import WaitPolicy
from tests.support.answering import AnsweringTransport, completion
from tests.support.scripted import RecordingSink, service_over

MESSAGES = [{"role": "user", "content": "Say hi"}]


def answering_service(
    answers: dict[str, tuple[int, dict[str, Any]]], **kw: Any
) -> tuple[ChatService, AnsweringTransport, RecordingSink]:
    transport = AnsweringTransport(answers)
    service, sink = service_over(transport, answers, **kw)
    return service, transport, sink


class TestComplete:
    async def test_the_answer_names_the_key_and_carries_the_upstream_usage(self):
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        service, _, sink = answering_service({"k0": (200, completion("hi", usage))})
        result = await service.complete(ChatCall({"messages": MESSAGES}, user_id="bob"))
        assert (result.completion.content, result.provider, result.key_index) == ("hi", "alpha", 0)
        assert (result.path, result.model) == ("A", "m")
        assert result.usage.as_dict()["total_tokens"] == 7
        [event] = sink.events
        assert (event.prompt_tokens, event.completion_tokens, event.user_id) == (5, 2, "bob")

    async def test_without_upstream_usage_the_tokens_are_estimated(self):
        service, _, _ = answering_service({"k0": (200, completion("a reply of some length"))})
        result = await service.complete(ChatCall({"messages": MESSAGES}))
        assert result.usage.estimated
        assert result.usage.completion_tokens > 0

    async def test_a_failing_key_falls_over_to_the_next(self):
        service, transport, sink = answering_service(
            {"k0": (500, {}), "k1": (200, completion("from k1"))}
        )
        result = await service.complete(ChatCall({"messages": MESSAGES}))
        assert result.key_index == 1
        assert [a.as_dict()["key_index"] for a in result.attempts] == [0]
        assert [e.error for e in sink.events] == [True, False]
        assert [key for _, _, key in transport.requests] == ["k0", "k1"]

    async def test_fallback_off_allows_one_attempt(self):
        service, transport, _ = answering_service({"k0": (500, {}), "k1": (200, completion("x"))})
        with pytest.raises(AllProvidersFailed):
            await service.complete(ChatCall({"messages": MESSAGES}, fallback=False))
        assert len(transport.requests) == 1

    async def test_an_unknown_provider_is_refused_before_any_upstream_call(self):
        service, transport, _ = answering_service({"k0": (200, completion("x"))})
        with pytest.raises(UnknownProvider):
            await service.complete(ChatCall({"messages": MESSAGES}, provider="nope"))
        assert transport.requests == []

    async def test_a_failure_nudges_the_injected_hook(self):
        nudged: list[int] = []
        service, _, _ = answering_service(
            {"k0": (401, {}), "k1": (200, completion("x"))},
            on_key_failure=lambda: nudged.append(1),
            policy=WaitPolicy(deadline_s=1.0),
        )
        await service.complete(ChatCall({"messages": MESSAGES}))
        assert nudged == [1]
        assert service.runner.policy.deadline_s == 1.0


class TestBlockingEntryPoints:
    def test_without_a_bound_loop_a_blocking_call_fails_at_once(self):
        service, _, _ = answering_service({"k0": (200, completion("x"))})
        with pytest.raises(RuntimeError):
            service.chat(MESSAGES)

    async def test_chat_async_takes_path_b_with_a_model(self):
        service, _, _ = answering_service({"k0": (200, completion("x"))})
        result = await service.chat_async(MESSAGES, model="m", provider="alpha")
        assert result.path == "B"
