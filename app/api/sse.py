"""Server-sent event framing for the keypool and OpenAI stream formats, and stream opening."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.api.observe import note_answer
from app.api.responses import json_response
from app.chat.streams import ChatStream, StreamInterrupted

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"
CLIENT_CLOSED = 499  # nginx's status for "client closed request"; nobody is left to read it


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def start_event(stream: ChatStream) -> dict[str, Any]:
    event = {
        "type": "start",
        "provider": stream.provider,
        "model": stream.model,
        "path": stream.path,
        "key_index": stream.key_index,
        "attempts": [a.as_dict() for a in stream.attempts],
    }
    if stream.group is not None:  # a model group's start event names it
        event["group"] = stream.group
    return event


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


async def keypool_events(stream: ChatStream) -> AsyncGenerator[dict[str, Any]]:
    """start, chunk…, done — or one error event after a mid-stream failure.

    Whoever iterates this must close it (`contextlib.aclosing`) if they stop early.
    """
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
    events = keypool_events(stream)
    try:
        async for event in events:
            yield sse(event)
    finally:
        await events.aclose()


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    """A committed stream. Starlette cancels `body` when the client disconnects (it listens for
    `http.disconnect` while sending: uvicorn speaks ASGI 2.3), so clean-up lives in `finally`."""
    return StreamingResponse(
        body, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )


async def stream_answer(
    request: Request,
    opening: Coroutine[Any, Any, ChatStream],
    render: Callable[[ChatStream], AsyncIterator[bytes]],
    headers: Callable[[ChatStream], dict[str, str]],
) -> Response:
    """The SSE answer once the first token is in; before it, the JSON error (or 499) instead."""
    opened = await open_while_connected(request, opening)
    if isinstance(opened, Response):
        return opened
    note_answer(request, opened)  # the request log line: path, model, attempts
    return sse_response(render(opened), headers(opened))


async def open_while_connected(
    request: Request, opening: Coroutine[Any, Any, ChatStream]
) -> ChatStream | Response:
    """Wait for the first token, unless the client leaves first: then cancel the upstream.

    Nobody listens for a disconnect before the response starts, and the first token may be
    seconds away (slow model, a key that hangs until its timeout): without this the upstream
    would keep generating for a client that is gone.
    """
    opener = asyncio.ensure_future(opening)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((opener, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not opener.done():
            opener.cancel()
    if not opener.cancelled():
        return opener.result()  # the stream, or the KeypoolError for the JSON answer
    await asyncio.gather(opener, return_exceptions=True)  # let fallback release its key
    body = {"error": {"type": "client_closed_request", "message": "the client went away"}}
    return json_response(body, CLIENT_CLOSED)


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
