"""SSE framing of keypool and OpenAI stream events, over streams from a scripted Transport."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import orjson

from app.api.openai import openai_chunks
from app.api.sse import keypool_events, sse
from app.chat.service import ChatCall
from app.chat.streams import ChatStream
from app.providers.errors import UpstreamConnectionError, UpstreamServerError
from tests.support.scripted import ScriptedStream, answer, event, scripted_service

CALL = ChatCall({"messages": [{"role": "user", "content": "x" * 40}]})
USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


async def opened(*answers: ScriptedStream | UpstreamServerError) -> ChatStream:
    service, _, _ = scripted_service({f"k{i}": a for i, a in enumerate(answers)})
    return await service.open_stream(CALL)


async def events_of(stream: ChatStream) -> list[dict[str, Any]]:
    return [e async for e in keypool_events(stream)]


def decode(frames: list[bytes]) -> list[Any]:
    data = [f.removeprefix(b"data: ").removesuffix(b"\n\n") for f in frames]
    return [d.decode() if d == b"[DONE]" else orjson.loads(d) for d in data]


class TestFraming:
    def test_one_data_line_and_a_blank_line(self):
        assert sse({"type": "chunk", "content": "é\n"}) == (
            b'data: {"type":"chunk","content":"\xc3\xa9\\n"}\n\n'
        )


class TestKeypoolEvents:
    async def test_start_chunks_done(self):
        stream = await opened(
            UpstreamServerError("upstream 500", status=500), ScriptedStream(answer("a", "b"))
        )
        events = await events_of(stream)
        assert events[0] == {
            "type": "start",
            "provider": "alpha",
            "model": "m",
            "path": "A",
            "key_index": 1,
            "attempts": [
                {"provider": "alpha", "key_index": 0, "error": "server_error", "status": 500}
            ],
        }
        assert events[1:-1] == [
            {"type": "chunk", "content": "a"},
            {"type": "chunk", "content": "b"},
        ]  # the role-only chunk is not an event
        assert events[-1] == {
            "type": "done",
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 1,  # "ab": ~4 characters a token, rounded up
                "total_tokens": 11,
                "estimated": True,
            },
            "finish_reason": "stop",
            "cost_usd": 0.0,  # a service without prices prices nothing
        }

    async def test_cut_gives_exactly_one_error_event_and_no_done(self):
        cut = ScriptedStream([event("a"), event("b")], error=UpstreamConnectionError("reset"))
        events = await events_of(await opened(cut))
        assert [e["type"] for e in events] == ["start", "chunk", "chunk", "error"]
        assert events[-1]["error"]["type"] == "upstream_stream_error"
        assert cut.closed

    async def test_closing_early_closes_upstream(self):
        upstream = ScriptedStream([event(f"w{i}") for i in range(50)])
        async with aclosing(keypool_events(await opened(upstream))) as events:
            async for item in events:
                if item["type"] == "chunk":
                    break
        assert upstream.closed


class TestOpenAIChunks:
    async def test_usage_chunk_only_when_asked_with_the_streams_id(self):
        for include_usage in (False, True):
            stream = await opened(ScriptedStream(answer("a", usage=USAGE)))
            frames = decode([f async for f in openai_chunks(stream, include_usage)])
            assert frames[-1] == "[DONE]"
            chunks = frames[:-1]
            with_usage = [c for c in chunks if "usage" in c]
            if include_usage:
                assert with_usage == [chunks[-1]]
                assert chunks[-1]["choices"] == []
                assert chunks[-1]["usage"] == USAGE
                assert chunks[-1]["id"] == "chatcmpl-scripted"
            else:
                assert with_usage == []
            assert all(c["object"] == "chat.completion.chunk" for c in chunks)

    async def test_estimated_usage_is_marked(self):
        stream = await opened(ScriptedStream(answer("abcd")))
        frames = decode([f async for f in openai_chunks(stream, True)])
        assert frames[-2]["usage"]["estimated"] is True

    async def test_cut_ends_with_an_error_payload_and_no_done(self):
        cut = ScriptedStream([event("a")], error=UpstreamConnectionError("reset"))
        frames = decode([f async for f in openai_chunks(await opened(cut), True)])
        assert frames[-1]["error"]["code"] == "upstream_stream_error"
        assert "[DONE]" not in frames
        assert cut.closed
