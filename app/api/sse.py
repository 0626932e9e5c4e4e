"""Server-sent event framing for the keypool and OpenAI stream formats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from app.chat.streams import ChatStream, StreamInterrupted

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def start_event(stream: ChatStream) -> dict[str, Any]:
    return {
        "type": "start",
        "provider": stream.provider,
        "model": stream.model,
        "path": stream.path,
        "key_index": stream.key_index,
        "attempts": [a.as_dict() for a in stream.attempts],
    }


def done_event(stream: ChatStream) -> dict[str, Any]:
    usage = stream.usage.as_dict() if stream.usage else None
    return {"type": "done", "usage": usage, "finish_reason": stream.finish_reason}


def interrupted_event(exc: StreamInterrupted, stream: ChatStream) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": "upstream_stream_error",
            "message": f"the upstream stream failed after it started ({exc.cause.reason})",
            "provider": stream.provider,
            "key_index": stream.key_index,
        },
    }


async def keypool_events(stream: ChatStream) -> AsyncIterator[dict[str, Any]]:
    """start, chunk…, done — or one error event after a mid-stream failure."""
    try:
        yield start_event(stream)
        async for chunk in stream:
            if chunk.content:
                yield {"type": "chunk", "content": chunk.content}
        yield done_event(stream)
    except StreamInterrupted as exc:
        yield interrupted_event(exc, stream)
    finally:
        await stream.aclose()


async def keypool_sse(stream: ChatStream) -> AsyncIterator[bytes]:
    async for event in keypool_events(stream):
        yield sse(event)
