"""First-token commit, settlement and usage of streams, against a scripted Transport (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from app.chat.service import ChatCall, ChatService
from app.chat.streams import ChatStream, StreamInterrupted
from app.errors import AllKeysFailed
from app.providers.client import parse_chunk
from app.providers.errors import (
    UpstreamConnectionError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamStreamError,
)
from tests.support.scripted import ScriptedStream, answer, event, scripted_service

CALL = ChatCall({"messages": [{"role": "user", "content": "x" * 40}]})
CUT = UpstreamConnectionError("upstream response cut short")
TOOL_DELTA = [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]


async def drain(stream: ChatStream) -> str:
    return "".join([chunk.content async for chunk in stream])


async def collect(stream: ChatStream, into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk.content)


async def in_flight(service: ChatService) -> int:
    snapshot = await service.store.snapshot("alpha", 0.0)
    return sum(key.in_flight for key in snapshot.keys)


class TestUsage:
    async def test_estimated_and_marked_when_upstream_sends_none(self):
        service, _, sink = scripted_service({"k0": ScriptedStream(answer("abcd", "efgh"))})
        stream = await service.open_stream(CALL)
        assert await drain(stream) == "abcdefgh"

        assert stream.usage is not None
        assert stream.usage.as_dict() == {
            "prompt_tokens": 10,  # 40 characters at ~4 a token
            "completion_tokens": 2,
            "total_tokens": 12,
            "estimated": True,
        }
        (recorded,) = sink.events
        assert (recorded.prompt_tokens, recorded.completion_tokens) == (10, 2)
        assert not recorded.error

    async def test_upstream_usage_is_reported_and_recorded_once(self):
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        service, transport, sink = scripted_service(
            {"k0": ScriptedStream(answer("a", "b", "c", usage=usage))}
        )
        stream = await service.open_stream(CALL)
        await drain(stream)
        await stream.aclose()  # a second settlement attempt changes nothing

        assert stream.usage is not None
        assert stream.usage.as_dict() == usage
        assert [(e.prompt_tokens, e.completion_tokens) for e in sink.events] == [(7, 3)]
        assert transport.bodies[0]["stream_options"] == {"include_usage": True}
        assert await in_flight(service) == 0


class TestFirstToken:
    async def test_role_only_chunk_does_not_commit(self):
        service, _, _ = scripted_service(
            {
                "k0": ScriptedStream([event("", role="assistant")], error=CUT),
                "k1": ScriptedStream(answer("ok")),
            }
        )
        stream = await service.open_stream(CALL)
        assert stream.key_index == 1
        assert [(a.key_index, a.error) for a in stream.attempts] == [(0, "connection_error")]
        assert await drain(stream) == "ok"

    async def test_tool_call_only_delta_commits(self):
        service, _, _ = scripted_service(
            {
                "k0": ScriptedStream([event(None, tool_calls=TOOL_DELTA)], error=CUT),
                "k1": ScriptedStream(answer("never")),
            }
        )
        stream = await service.open_stream(CALL)
        assert stream.key_index == 0
        with pytest.raises(StreamInterrupted):
            await drain(stream)

    @pytest.mark.parametrize(
        "failure",
        [
            UpstreamRateLimited("upstream 429", status=429),
            UpstreamServerError("upstream 500", status=500),
            UpstreamStreamError("upstream reported an error mid-stream"),
        ],
    )
    async def test_failures_before_it_fall_over(self, failure):
        service, transport, _ = scripted_service(
            {
                "k0": failure,
                "k1": ScriptedStream([], error=failure),
                "k2": ScriptedStream(answer("x")),
            }
        )
        stream = await service.open_stream(CALL)
        assert stream.key_index == 2
        assert [a.key_index for a in stream.attempts] == [0, 1]
        assert transport.opened[0].closed  # the failed stream's connection was dropped

    async def test_all_failing_raises_for_the_json_answer(self):
        service, _, sink = scripted_service(
            {"k0": ScriptedStream([], error=CUT), "k1": ScriptedStream([event("")], error=CUT)}
        )
        with pytest.raises(AllKeysFailed):
            await service.open_stream(ChatCall(CALL.params, model="m"))
        assert [e.error for e in sink.events] == [True, True]
        assert await in_flight(service) == 0


class TestEndings:
    async def test_finish_without_done_marker_is_complete(self):
        lines = [event("hi"), event(finish="stop")]
        service, _, sink = scripted_service({"k0": ScriptedStream(lines)})
        stream = await service.open_stream(CALL)
        assert await drain(stream) == "hi"
        assert stream.finish_reason == "stop"
        assert not sink.events[0].error

    async def test_end_without_finish_or_done_is_a_mid_stream_failure(self):
        service, _, sink = scripted_service({"k0": ScriptedStream([event("hi")])})
        stream = await service.open_stream(CALL)
        with pytest.raises(StreamInterrupted):
            await drain(stream)
        assert sink.events[0].error

    async def test_mid_stream_cut_charges_the_key_and_ends_iteration(self):
        service, transport, sink = scripted_service(
            {"k0": ScriptedStream([event("a"), event("b")], error=CUT)}
        )
        stream = await service.open_stream(CALL)
        pieces: list[str] = []
        with pytest.raises(StreamInterrupted) as caught:
            await collect(stream, pieces)
        assert pieces == ["a", "b"]
        assert caught.value.cause is CUT
        assert [anext_result async for anext_result in stream] == []
        assert transport.opened[0].closed
        (recorded,) = sink.events
        assert recorded.error
        assert recorded.completion_tokens == 1  # estimated from the text that did arrive


class TestAbandon:
    async def test_aclose_mid_stream_drops_upstream_and_frees_the_key(self):
        service, transport, sink = scripted_service(
            {"k0": ScriptedStream([event(f"w{i} ") for i in range(100)])}
        )
        stream = await service.open_stream(CALL)
        assert (await anext(stream)).content == "w0 "
        await stream.aclose()
        assert transport.opened[0].closed
        assert await in_flight(service) == 0
        assert len(sink.events) == 1
        assert not sink.events[0].error  # the client leaving is not the key's fault

    async def test_cancelled_consumer_still_settles(self):
        reached, gate = asyncio.Event(), asyncio.Event()

        class Stalling(ScriptedStream):
            async def __anext__(self) -> bytes:
                if not self.script:
                    reached.set()
                    await gate.wait()
                return await super().__anext__()

        service, transport, sink = scripted_service({"k0": Stalling([event("first")])})
        stream = await service.open_stream(CALL)
        consumer = asyncio.create_task(drain(stream))
        await reached.wait()
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert transport.opened[0].closed
        assert await in_flight(service) == 0
        assert len(sink.events) == 1


class TestParseChunk:
    def test_error_event_raises(self):
        with pytest.raises(UpstreamStreamError):
            parse_chunk(b'{"error": {"message": "overloaded"}}')

    @pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'"text"'])
    def test_malformed_raises(self, data: bytes):
        with pytest.raises(UpstreamStreamError):
            parse_chunk(data)

    @pytest.mark.parametrize(
        ("data", "first"),
        [
            (b'{"choices": [{"delta": {"role": "assistant", "content": ""}}]}', False),
            (b'{"choices": [{"delta": {"content": null, "tool_calls": [{"index": 0}]}}]}', True),
            (b'{"choices": [{"delta": {"reasoning_content": "hmm"}}]}', True),
            (b'{"choices": [{"delta": {}, "finish_reason": "stop"}]}', True),
            (b'{"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}', False),
            (b'{"choices": "odd", "usage": "odd"}', False),
        ],
    )
    def test_first_token(self, data: bytes, first: bool):
        assert parse_chunk(data).is_first_token is first
