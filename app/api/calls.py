"""From a validated request to a `ChatCall`: the one place every chat route builds one."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from app.chat.service import ChatCall
from app.errors import InvalidRequest
from app.schemas import MAX_USER_ID_CHARS, ChatRequest


def user_id_of(connection: HTTPConnection, from_body: str | None) -> str | None:
    """`X-User-Id` wins over the body; bounded like the body field because it becomes a DB key."""
    header = connection.headers.get("x-user-id")
    if header and len(header) > MAX_USER_ID_CHARS:
        raise InvalidRequest(
            f"invalid request: X-User-Id is over {MAX_USER_ID_CHARS} characters",
            details={"details": [{"loc": ["header", "x-user-id"], "msg": "too long"}]},
        )
    return header or from_body


def chat_call(body: ChatRequest, user_id: str | None) -> ChatCall:
    """A keypool-native request (HTTP or websocket frame); `user_id` as the transport found it."""
    return ChatCall(
        params=body.upstream_params(),
        model=body.model,
        provider=body.provider,
        fallback=body.fallback,
        user_id=user_id,
    )
