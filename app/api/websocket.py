"""WS /api/chat/ws: many chat requests over one socket, each answered with tagged events.

Idle sockets are kept alive by the server's pings, not by this module: uvicorn's websocket
protocol pings every `ws_ping_interval` seconds and drops a peer that does not answer within
`ws_ping_timeout`. Its defaults (20 s / 20 s) are on for `keypool serve` (which passes
WS_PING_INTERVAL_S / WS_PING_TIMEOUT_S explicitly), `keypool demo` and `uvicorn app.main:app`;
only the test servers turn them off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import aclosing
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnected

from app.access.principal import Principal
from app.api.access import PRINCIPAL, check, require_budget
from app.api.calls import chat_call, is_utf8_header, tier_of
from app.api.deps import runtime_of
from app.api.depth import MAX_JSON_DEPTH, too_deep
from app.api.errors import invalid_request
from app.api.sse import keypool_events
from app.api.ws_observe import WsRequest, principal_of
from app.chat.service import ChatService
from app.errors import InvalidRequest, KeypoolError
from app.observability.record import request_info
from app.runtime import Runtime
from app.schemas import MAX_USER_ID_CHARS, ChatRequest

router = APIRouter(tags=["chat"])
logger = logging.getLogger("keypool.ws")

# What sending on a socket the client already closed raises (starlette maps uvicorn's OSError).
_GONE = (WebSocketDisconnect, WebSocketDisconnected, OSError)


class ChatSocket:
    """One client connection: a reader loop plus one task per request; sends are serialised.

    When the socket closes, the reader cancels every request task, and each task's stream
    clean-up drops its upstream connection and releases its key.
    """

    def __init__(self, websocket: WebSocket, runtime: Runtime) -> None:
        self.websocket = websocket
        self.service: ChatService = runtime.service
        self.max_chars = runtime.settings.max_message_chars
        self.max_frame = runtime.settings.ws_max_message_bytes
        self.max_in_flight = runtime.settings.ws_max_inflight
        self.user_id = websocket.headers.get("x-user-id") or websocket.query_params.get("user_id")
        self.hub = runtime.observability  # each request recorded as route /api/chat/ws
        # token/trusted mode: each chat frame is one request of this user (rate limit, budget);
        # the handshake's admission (by the access middleware) covers the first frame.
        self.access = runtime.access
        self.principal: Principal | None = websocket.scope.get(PRINCIPAL)
        self.principal_user = principal_of(websocket.scope)  # the log line's user, if any
        self.tier = tier_of(websocket)  # its weight in fair waiting, as on the HTTP routes
        self._prepaid = self.principal is not None
        self._send_lock = asyncio.Lock()
        self.user_streams = runtime.user_streams
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(orjson.dumps(event).decode())

    async def serve(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                frame = message.get("text")
                frame = frame if frame is not None else message.get("bytes") or b""
                if len(self._tasks) >= self.max_in_flight:
                    # Answered before the next read: a flooding client waits, and this socket
                    # never holds more than WS_MAX_INFLIGHT frames and requests.
                    await self._refuse_busy(frame)
                else:
                    self._dispatch(frame)
        except WebSocketDisconnect:
            return
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _dispatch(self, frame: str | bytes) -> None:
        task = asyncio.create_task(self._handle(frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, frame: str | bytes) -> None:
        request_id = None
        seen = WsRequest(
            self.user_id, self.principal_user
        )  # this request's id, metrics and log line
        gone = False
        try:
            data = self._parse(frame)
            request_id = echoable_id(data.get("id"))
            seen.adopt(data)
            await self._admit()
            request = ChatRequest.model_validate(
                data, context={"max_message_chars": self.max_chars}
            )
            await self._chat(request, seen)
        except ValidationError as exc:
            await self._error(request_id, invalid_request(exc), seen)
        except KeypoolError as exc:
            await self._error(request_id, exc, seen)
        except _GONE:
            gone = True
            return  # the socket closed under us; the reader loop cancels the rest
        except asyncio.CancelledError:
            gone = True
            raise
        except Exception as exc:  # one request's bug must not kill the socket or go unseen
            logger.error("unexpected %s in a websocket chat request", type(exc).__name__)
            error = KeypoolError("internal error; request not completed")
            await self._error(request_id, error, seen)
        finally:
            seen.finish(self.hub, gone=gone)

    async def _admit(self) -> None:
        """Per frame, as the middleware does per HTTP request: over the budget or the user's
        rate limit → that frame's error event; the socket stays open."""
        if self.principal is None:
            return
        if self._prepaid:  # counted at the handshake; the budget may have run out since
            self._prepaid = False
            require_budget(self.access, self.principal)
            return
        await check(self.access, self.principal)

    async def _refuse_busy(self, frame: str | bytes) -> None:
        """One socket may not hold more than WS_MAX_INFLIGHT requests: it would starve the others."""
        seen = WsRequest(self.user_id, self.principal_user)
        try:
            data = self._parse(frame)
            request_id = echoable_id(data.get("id"))
            seen.adopt(data)
        except InvalidRequest:
            request_id = None
        error = TooManyInFlight(
            f"{self.max_in_flight} requests are already in flight on this socket; "
            "wait for one to end"
        )
        with contextlib.suppress(*_GONE):
            await self._error(request_id, error, seen)
        seen.finish(self.hub)

    def _parse(self, frame: str | bytes) -> dict[str, Any]:
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
        if size > self.max_frame:
            raise InvalidRequest(f"frame is {size} bytes; the limit is {self.max_frame}")
        try:
            data = orjson.loads(frame)
        except orjson.JSONDecodeError:
            raise InvalidRequest("frame is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequest("frame must be a JSON object (a chat request)")
        if too_deep(frame, data):
            raise InvalidRequest(f"frame nests JSON more than {MAX_JSON_DEPTH} levels deep")
        return data

    async def _chat(self, request: ChatRequest, seen: WsRequest) -> None:
        call = chat_call(request, request.user_id or self.user_id, self.tier)
        self.user_streams.acquire(call.user_id)
        try:
            stream = await self.service.open_stream(call)
            async with aclosing(keypool_events(stream)) as events:
                async for event in events:
                    await self.send(seen.tag({**event, "id": request.id}))
        finally:
            self.user_streams.release(call.user_id)

    async def _error(
        self, request_id: Any, error: KeypoolError, seen: WsRequest | None = None
    ) -> None:
        body = error.body()["error"]
        event = {"type": "error", "id": request_id, "status": error.status_code, "error": body}
        try:
            await self.send((seen or WsRequest(self.user_id, self.principal_user)).tag(event))
        except _GONE:
            return


def echoable_id(value: Any) -> str | int | None:
    """The id as ChatRequest accepts it (a string or a whole number), else none: never echo
    a structure nobody validated (it may not even serialise)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return None  # orjson writes 64-bit integers only
    return value if isinstance(value, str) else int(value)


@router.websocket("/api/chat/ws")
async def chat_ws(websocket: WebSocket) -> None:
    """Send ChatRequest JSON frames (optional `id`); receive start/chunk/done or error events."""
    await websocket.accept()
    socket = ChatSocket(websocket, runtime_of(websocket))
    if socket.user_id is not None and (
        len(socket.user_id) > MAX_USER_ID_CHARS
        or not is_utf8_header(websocket.headers.get("x-user-id") or "")
    ):
        error = InvalidRequest(f"user id is over {MAX_USER_ID_CHARS} characters or not valid UTF-8")
        info = request_info(websocket.scope)  # the handshake's id
        await socket.send(
            {
                "type": "error",
                "id": None,
                "request_id": info.request_id if info is not None else None,
                "status": 422,
                "error": error.body()["error"],
            }
        )
        await websocket.close(code=1008)
        return
    await socket.serve()


class TooManyInFlight(KeypoolError):
    """A websocket client sent more concurrent requests than one socket may hold."""

    status_code = 429
    type = "too_many_in_flight"
