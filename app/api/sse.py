"""Server-sent event framing for the keypool and OpenAI stream formats, and stream opening."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.api.deps import runtime_of
from app.api.observe import note_answer
from app.api.responses import json_response
from app.chat.streams import ChatStream, StreamInterrupted
from app.chat.userstreams import TooManyStreams, UserStreams

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"
logger = logging.getLogger("keypool.api")
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
    return {
        "type": "done",
        "usage": usage,
        "finish_reason": stream.finish_reason,
        "cost_usd": round(stream.cost_usd, 10),
    }


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
    user_id: str | None = None,
) -> Response:
    """The SSE answer once the first token is in; before it, the JSON error (or 499) instead."""
    streams: UserStreams | None = runtime_of(request).user_streams
    if streams is not None:
        try:
            streams.acquire(user_id)
        except TooManyStreams:
            opening.close()  # never started: no key was taken
            raise
    try:
        opened = await open_while_connected(request, opening)
    except BaseException:
        if streams is not None:
            streams.release(user_id)
        raise
    if isinstance(opened, Response):
        if streams is not None:
            streams.release(user_id)
        return opened
    note_answer(request, opened)  # the request log line: path, model, attempts
    body = render(opened)
    if streams is not None:
        body = _releasing(body, streams, user_id)
    return sse_response(body, headers(opened))


async def _releasing(
    body: AsyncIterator[bytes], streams: UserStreams, user_id: str | None
) -> AsyncIterator[bytes]:
    try:
        async for frame in body:
            yield frame
    finally:
        streams.release(user_id)
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


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
        left = not opener.done()
        if left:
            opener.cancel()
    if not left:
        return opener.result()  # the stream, or the KeypoolError for the JSON answer
    # cancel() only requests it: the task is not done (nor cancelled()) until it has run again.
    await asyncio.gather(opener, watcher, return_exceptions=True)  # let fallback release its key
    if not opener.cancelled() and opener.exception() is None:
        await opener.result().aclose()  # it opened as the client left: nobody will read it
    logger.info("client closed the request before the first token (499)")
    body = {"error": {"type": "client_closed_request", "message": "the client went away"}}
    return json_response(body, CLIENT_CLOSED)


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
