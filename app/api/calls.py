"""From a validated request to a `ChatCall`: the one place every chat route builds one."""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.requests import HTTPConnection

from app.chat.service import ChatCall
from app.errors import InvalidRequest
from app.schemas import MAX_USER_ID_CHARS, ChatRequest, OpenAIChatRequest

AUTO_MODEL = "auto"  # /v1's name for Path A


def is_utf8_header(value: str) -> bool:
    """Starlette hands header bytes over as latin-1: valid UTF-8 survives the round trip."""
    try:
        value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return False
    return True


def user_id_of(connection: HTTPConnection, from_body: str | None) -> str | None:
    """`X-User-Id` wins over the body; bounded like the body field because it becomes a DB key."""
    header = connection.headers.get("x-user-id")
    if header and not header.isascii() and not is_utf8_header(header):
        raise InvalidRequest(
            "invalid request: X-User-Id is not valid UTF-8",
            details={"details": [{"loc": ["header", "x-user-id"], "msg": "not valid UTF-8"}]},
        )
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
        cache=body.cache,
    )


def openai_call(body: OpenAIChatRequest, raw: dict[str, Any], user_id: str | None) -> ChatCall:
    """An OpenAI-shaped request: `model: "auto"` takes Path A, any other model Path B."""
    return ChatCall(
        params=body.upstream_params(raw),
        model=None if body.model == AUTO_MODEL else body.model,
        user_id=user_id,
        cache=body.cache,
    )


def group_key(user: str | None) -> str | None:
    """OpenAI puts no length limit on `user`; an id too long to store is replaced by its hash."""
    if user is None or len(user) <= MAX_USER_ID_CHARS:
        return user
    return "sha256:" + hashlib.sha256(user.encode()).hexdigest()
